"""Events keep their tenant without a per-row foreign key check.

The foreign key from ``events`` to ``tenants`` made every inserted event lock
its tenant's row (``FOR KEY SHARE``). All of a tenant's concurrent appends
lock that one row, so PostgreSQL builds a multixact for it again and again.
Measured on the 2-core bench machine, the store's single-event appends at 16
clients went from 1.2-1.4k to 2.0-2.1k events/s without it, and batches of
1,000 from 21-26k to 27-28k events/s.

The guarantee is kept from the other side: a tenant row can be neither deleted
nor renumbered (triggers on ``tenants``), and an event's ``tenant_id`` always
comes from an existing tenant (the authenticated key's, or a tenants lookup),
pinned by row-level security for API requests (migration 0006).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from ledger.store.migrate import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
        ALTER TABLE events DROP CONSTRAINT IF EXISTS events_tenant_id_fkey;

        CREATE FUNCTION tenants_are_forever() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'tenants are never deleted or renumbered: their events refer to them'
                USING ERRCODE = 'restrict_violation';
        END
        $$;

        CREATE TRIGGER tenants_no_delete BEFORE DELETE ON tenants
            FOR EACH ROW EXECUTE FUNCTION tenants_are_forever();
        CREATE TRIGGER tenants_no_renumber BEFORE UPDATE OF tenant_id ON tenants
            FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
            EXECUTE FUNCTION tenants_are_forever();
        CREATE TRIGGER tenants_no_truncate BEFORE TRUNCATE ON tenants
            FOR EACH STATEMENT EXECUTE FUNCTION tenants_are_forever();
    """)


def downgrade() -> None:
    execute_script("""
        DROP TRIGGER tenants_no_truncate ON tenants;
        DROP TRIGGER tenants_no_renumber ON tenants;
        DROP TRIGGER tenants_no_delete ON tenants;
        DROP FUNCTION tenants_are_forever();
        ALTER TABLE events ADD CONSTRAINT events_tenant_id_fkey
            FOREIGN KEY (tenant_id) REFERENCES tenants;
    """)
