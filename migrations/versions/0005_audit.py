"""Audit: digest checkpoints, per-person keys, sealed personal data on events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from alembic import op
from sqlalchemy.util import await_

from ledger.audit.reseal import seal_plaintext_registrations
from ledger.store.migrate import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- The AES-GCM ciphertext of an event's personal data (person.registered:
    -- display_name, email). Part of the event, so as immutable as the rest of
    -- it; readable only while the person's key exists.
    ALTER TABLE events ADD COLUMN sealed bytea;

    -- One data key per person; the only mutable thing about personal data.
    -- person.forgotten deletes the row, which shreds every ciphertext sealed
    -- under it.
    CREATE TABLE person_keys (
        tenant_id   bigint NOT NULL REFERENCES tenants,
        person      text NOT NULL,
        key         bytea NOT NULL CHECK (length(key) = 32),
        created_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, person)
    );

    -- The digest chain as it stood after `events` events of the tenant's log
    -- (in reader order, the last one at (tx_id, position)), so a digest request
    -- hashes only the tail after the newest checkpoint.
    CREATE TABLE digest_checkpoints (
        tenant_id  bigint NOT NULL REFERENCES tenants,
        events     bigint NOT NULL CHECK (events > 0),
        tx_id      bigint NOT NULL,
        position   bigint NOT NULL,
        digest     bytea NOT NULL,
        PRIMARY KEY (tenant_id, events)
    );
    """)
    # Registrations stored in clear before this revision: sealed now, so that
    # forgetting those people shreds their data too.
    await_(seal_plaintext_registrations(op.get_bind().connection.driver_connection))


def downgrade() -> None:
    # Sealed personal data goes with the column: there is no way back to clear text.
    execute_script("""
    DROP TABLE digest_checkpoints;
    DROP TABLE person_keys;
    ALTER TABLE events DROP COLUMN sealed;
    """)
