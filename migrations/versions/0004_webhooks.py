"""Webhooks: subscriptions and the delivery outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- A URL subscribed to event types and/or violation codes ('*': all).
    -- Secrets sign deliveries (HMAC), so they are kept as given, not hashed;
    -- the previous one keeps signing beside the new one until it expires.
    CREATE TABLE webhooks (
        tenant_id                   bigint NOT NULL REFERENCES tenants,
        webhook_id                  uuid NOT NULL,
        url                         text NOT NULL,
        event_types                 text[] NOT NULL DEFAULT '{}',
        violation_codes             text[] NOT NULL DEFAULT '{}',
        description                 text NOT NULL DEFAULT '',
        secret                      text NOT NULL,
        previous_secret             text,
        previous_secret_expires_at  timestamptz,
        created_at                  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, webhook_id)
    );

    -- The outbox: one row per message and subscription, written in the
    -- transaction that caused it, so nothing is lost across restarts.
    -- delivery_id is the message's `webhook-id` (the same on every retry).
    CREATE TABLE webhook_deliveries (
        tenant_id             bigint NOT NULL,
        delivery_id           uuid NOT NULL,
        webhook_id            uuid NOT NULL,
        message_type          text NOT NULL,
        payload               jsonb NOT NULL,
        status                text NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts              integer NOT NULL DEFAULT 0,
        next_attempt_at       timestamptz NOT NULL DEFAULT now(),
        last_attempt_at       timestamptz,
        last_response_status  integer,
        last_error            text,
        created_at            timestamptz NOT NULL DEFAULT now(),
        delivered_at          timestamptz,
        PRIMARY KEY (tenant_id, delivery_id),
        FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks ON DELETE CASCADE
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
        WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_listing
        ON webhook_deliveries (tenant_id, webhook_id, created_at, delivery_id);
    """)


def downgrade() -> None:
    execute_script("""
    DROP TABLE webhook_deliveries;
    DROP TABLE webhooks;
    """)
