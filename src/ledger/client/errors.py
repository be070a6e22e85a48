"""Problem details (RFC 9457) raised as one typed exception."""

from __future__ import annotations

from typing import Any, Final

import httpx
import msgspec

from ledger.client.wire import BODY_DECODER, PROBLEM_DECODER, Problem

PROBLEM_TYPE_PREFIX: Final = "urn:ledger:problem:"


class ProblemError(Exception):
    """The ledger refused a request; the problem's fields say why and where.

    ``problem`` holds the known members, ``body`` every member as sent (newer
    servers may add some), ``headers`` the response's (``Retry-After``, ...).
    """

    def __init__(self, problem: Problem, body: dict[str, Any], headers: httpx.Headers) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.body = body
        self.headers = headers

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def slug(self) -> str:
        """``version-conflict``, ``invalid-input``, ...: the stable part of ``type``."""
        return self.problem.type.removeprefix(PROBLEM_TYPE_PREFIX)

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def field(self) -> str | None:
        return self.problem.field

    @property
    def pointer(self) -> str | None:
        return self.problem.pointer

    @classmethod
    def from_response(cls, response: httpx.Response) -> ProblemError:
        """Any error answer, problem+json or not (a proxy's HTML page)."""
        try:
            problem = PROBLEM_DECODER.decode(response.content)
            body = BODY_DECODER.decode(response.content)
        except msgspec.DecodeError:
            problem = Problem(
                title=response.reason_phrase,
                status=response.status_code,
                detail=response.text[:500],
            )
            body = {}
        if problem.status != response.status_code:
            problem = msgspec.structs.replace(problem, status=response.status_code)
        return cls(problem, body, response.headers)
