"""Tenants, API keys and the append-only events table.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE tenants (
        tenant_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name        text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
        created_at  timestamptz NOT NULL DEFAULT now()
    );

    -- Keys are stored only as SHA-256 hashes: they are 256-bit random secrets,
    -- so a slow password hash would add latency to every request and no safety.
    CREATE TABLE api_keys (
        tenant_id   bigint NOT NULL REFERENCES tenants,
        key_id      text NOT NULL UNIQUE,
        key_hash    bytea NOT NULL UNIQUE,
        scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0),
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz,
        PRIMARY KEY (tenant_id, key_id)
    );

    -- position: unique, growing with recording order (a sequence, so it has
    -- gaps). tx_id: the appending transaction, which orders the log for readers
    -- (see ledger.store.read for why).
    CREATE TABLE events (
        tenant_id    bigint NOT NULL REFERENCES tenants,
        id           uuid NOT NULL,
        position     bigint GENERATED ALWAYS AS IDENTITY,
        tx_id        xid8 NOT NULL DEFAULT pg_current_xact_id(),
        stream       text NOT NULL,
        version      integer NOT NULL CHECK (version >= 1),
        type         text NOT NULL,
        occurred_at  timestamptz NOT NULL,
        recorded_at  timestamptz NOT NULL DEFAULT now(),
        data         jsonb NOT NULL,
        metadata     jsonb NOT NULL DEFAULT '{}',
        people       jsonb NOT NULL DEFAULT '[]',
        PRIMARY KEY (tenant_id, id),
        CONSTRAINT events_stream_version UNIQUE (tenant_id, stream, version),
        CONSTRAINT events_log_order UNIQUE (tenant_id, tx_id, position)
    );
    CREATE INDEX events_people ON events USING gin (people jsonb_path_ops);
    CREATE INDEX events_type ON events (tenant_id, type, tx_id, position);

    -- Append-only, whatever the client: no UPDATE, DELETE or TRUNCATE.
    CREATE FUNCTION events_are_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the events table is append-only: % is refused', TG_OP
            USING ERRCODE = 'restrict_violation',
                  HINT = 'record a new event that corrects or supersedes the old one';
    END
    $$;
    CREATE TRIGGER events_no_update_or_delete
        BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
    CREATE TRIGGER events_no_truncate
        BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
    """)


def downgrade() -> None:
    execute_script("""
    DROP TABLE events;
    DROP FUNCTION events_are_append_only();
    DROP TABLE api_keys;
    DROP TABLE tenants;
    """)
