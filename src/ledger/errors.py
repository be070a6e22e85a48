"""Domain errors, raised by the core and the store, rendered by the API.

Each error carries what RFC 9457 needs (status, a stable slug, a title) and,
when one field is to blame, that field's path in the request body, so that the
API layer renders every error the same way without knowing where it came from.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self, detail: str, *, field: str | None = None, in_body: bool = True, **extra: Any
    ) -> None:
        """``field`` names the culprit; ``in_body`` says whether it is a body field
        (rendered also as a JSON Pointer) or a parameter or header."""
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.in_body = in_body
        self.extra = extra


class InvalidInput(LedgerError):
    status = 422
    slug = "invalid-input"
    title = "The request is not valid"


class PayloadTooLarge(LedgerError):
    status = 413
    slug = "payload-too-large"
    title = "The request is larger than allowed"


class UnsupportedMediaType(LedgerError):
    status = 415
    slug = "unsupported-media-type"
    title = "The body's media type is not accepted"


class NotFound(LedgerError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Unauthorized(LedgerError):
    status = 401
    slug = "unauthorized"
    title = "A valid API key is required"


class Forbidden(LedgerError):
    status = 403
    slug = "forbidden"
    title = "The API key lacks the scope this needs"


class VersionConflict(LedgerError):
    status = 409
    slug = "version-conflict"
    title = "The stream is not at the expected version"


class IdConflict(LedgerError):
    status = 409
    slug = "id-conflict"
    title = "An event with this id exists with other content"


class LifecycleConflict(LedgerError):
    status = 409
    slug = "lifecycle-conflict"
    title = "The event does not fit its stream's lifecycle"


class Unavailable(LedgerError):
    status = 503
    slug = "unavailable"
    title = "The ledger cannot serve this right now"


class RateLimited(LedgerError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests for this API key"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        """``retry_after``: whole seconds until the key may send again (``Retry-After``)."""
        super().__init__(detail, field="Authorization", in_body=False, **extra)
        self.retry_after = retry_after
