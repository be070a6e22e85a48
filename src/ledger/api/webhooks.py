"""``/v1/webhooks``: subscribe URLs to events and violations, see and replay deliveries.

Managing webhooks needs the ``admin`` scope: a subscription sends the tenant's
data to any URL.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from ledger.api.state import pool_of
from ledger.errors import NotFound
from ledger.tenants.keys import Principal
from ledger.webhooks.core import (
    Delivery,
    DeliveryPage,
    RotatedSecret,
    Status,
    Webhook,
    WebhookCreated,
    WebhookPage,
    decode_rotation,
    decode_webhook,
)
from ledger.webhooks.store import (
    create_webhook,
    delete_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    replay_dead,
    replay_delivery,
    rotate_secret,
)

ADMIN: Final = {"scope": "admin"}
Limit = Annotated[
    int, QueryParameter(ge=1, le=1000, description="Items per page (default 100, at most 1000).")
]
PageCursor = Annotated[str | None, QueryParameter(description="Resume after this `next_cursor`.")]


def _missing(webhook_id: uuid.UUID) -> NotFound:
    return NotFound(f"no webhook with id {webhook_id}", field="webhook_id", in_body=False)


@post(
    "/v1/webhooks",
    opt={**ADMIN, "request_body": "WebhookIn"},
    summary="Subscribe a URL to event types and/or violation codes",
    description=(
        "Deliveries are signed per the Standard Webhooks spec (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature`) with the `secret` answered here, once. "
        "`'*'` subscribes to every event type or every violation code."
    ),
    status_code=201,
)
async def subscribe(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> WebhookCreated:
    wanted = decode_webhook(await request.body())
    async with pool_of(request).acquire() as conn:
        return await create_webhook(conn, principal.tenant_id, wanted)


@get("/v1/webhooks", opt=ADMIN, summary="The tenant's webhooks (never their secrets)")
async def webhooks(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: PageCursor = None,
    limit: Limit = 100,
) -> WebhookPage:
    async with pool_of(request).acquire() as conn:
        return await list_webhooks(conn, principal.tenant_id, after=cursor, limit=limit)


@get("/v1/webhooks/{webhook_id:uuid}", opt=ADMIN, summary="One webhook")
async def webhook(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
) -> Webhook:
    async with pool_of(request).acquire() as conn:
        found = await get_webhook(conn, principal.tenant_id, webhook_id)
    if found is None:
        raise _missing(webhook_id)
    return found


@delete(
    "/v1/webhooks/{webhook_id:uuid}",
    opt=ADMIN,
    summary="Unsubscribe (pending deliveries are dropped)",
    status_code=204,
)
async def unsubscribe(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
) -> None:
    async with pool_of(request).acquire() as conn:
        if not await delete_webhook(conn, principal.tenant_id, webhook_id):
            raise _missing(webhook_id)


@post(
    "/v1/webhooks/{webhook_id:uuid}/rotate-secret",
    opt={**ADMIN, "request_body": "RotateIn"},
    summary="A new signing secret; the previous one keeps signing for a while",
    description=(
        "Until `previous_secret_expires_at` every delivery carries two signatures, one per "
        "secret, so receivers can switch to the new secret without missing a delivery. "
        "The body is optional."
    ),
    status_code=200,
)
async def rotate(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
) -> RotatedSecret:
    rotation = decode_rotation(await request.body())
    async with pool_of(request).acquire() as conn:
        rotated = await rotate_secret(
            conn, principal.tenant_id, webhook_id, rotation.keep_previous_for_seconds
        )
    if rotated is None:
        raise _missing(webhook_id)
    return rotated


@get(
    "/v1/webhooks/{webhook_id:uuid}/deliveries",
    opt=ADMIN,
    summary="A webhook's deliveries, oldest first; `status=dead` is the dead letter",
)
async def deliveries(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
    status: Annotated[
        Status | None, QueryParameter(description="Only deliveries in this state.")
    ] = None,
    cursor: PageCursor = None,
    limit: Limit = 100,
) -> DeliveryPage:
    async with pool_of(request).acquire() as conn:
        if await get_webhook(conn, principal.tenant_id, webhook_id) is None:
            raise _missing(webhook_id)
        return await list_deliveries(
            conn, principal.tenant_id, webhook_id, status=status, after=cursor, limit=limit
        )


@post(
    "/v1/webhooks/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/replay",
    opt=ADMIN,
    summary="Deliver a message again, from its first attempt",
    status_code=202,
)
async def replay(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
    delivery_id: FromPath[uuid.UUID],
) -> Delivery:
    async with pool_of(request).acquire() as conn:
        replayed = await replay_delivery(conn, principal.tenant_id, webhook_id, delivery_id)
    if replayed is None:
        raise NotFound(
            f"webhook {webhook_id} has no delivery {delivery_id}",
            field="delivery_id",
            in_body=False,
        )
    return replayed


class Replayed(msgspec.Struct, frozen=True):
    replayed: int


@post(
    "/v1/webhooks/{webhook_id:uuid}/deliveries/replay-dead",
    opt=ADMIN,
    summary="Deliver every dead message of a webhook again",
    status_code=202,
)
async def replay_dead_letter(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    webhook_id: FromPath[uuid.UUID],
) -> Replayed:
    async with pool_of(request).acquire() as conn:
        if await get_webhook(conn, principal.tenant_id, webhook_id) is None:
            raise _missing(webhook_id)
        return Replayed(await replay_dead(conn, principal.tenant_id, webhook_id))


ROUTES: Final = [
    subscribe,
    webhooks,
    webhook,
    unsubscribe,
    rotate,
    deliveries,
    replay,
    replay_dead_letter,
]
