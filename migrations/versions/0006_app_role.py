"""The application's database roles: what the ledger needs, no way to rewrite the
log, and each API request confined to its own tenant's rows.

* ``ledger_app``: what API requests work as. No UPDATE, DELETE or TRUNCATE on
  events; and row-level security on every tenant table lets it see and write
  only the rows of the tenant named by the ``ledger.tenant_id`` setting, which
  the API makes in one place (``ledger.api.state.pool_of``). Unset: no rows.
* ``ledger_worker``: what the projector and other background work (across
  tenants) work as. Same privileges, every tenant's rows (BYPASSRLS).

The events table's triggers refuse UPDATE, DELETE and TRUNCATE from anyone, but a
superuser can drop a trigger: the privileges are a second wall, enforced by the
database instead of code. Row-level security is a second wall behind the
``tenant_id = $1`` of every query.

Roles are cluster-wide while migrations run per database, often many at once in
one cluster (test databases): creating a role tolerates another database having
made it first, or making it at this very moment.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APP_ROLE = "ledger_app"
WORKER_ROLE = "ledger_worker"

# duplicate_object: the role existed already; unique_violation: another
# transaction created it concurrently and committed while this one waited.
CREATE_ROLE = """
DO $$
BEGIN
    CREATE ROLE {role} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
"""

# The worker reads and writes every tenant's rows, with COPY too, which row-level
# security does not allow: it bypasses it. Only a superuser may grant that; for
# another migrating user the role is made without it, and pools then keep their
# login role for cross-tenant work (ledger.store.database.assume_role).
CREATE_WORKER_ROLE = """
DO $$
BEGIN
    BEGIN
        CREATE ROLE {role} NOLOGIN BYPASSRLS;
    EXCEPTION WHEN insufficient_privilege THEN
        CREATE ROLE {role} NOLOGIN;
    END;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
"""

GRANTS = """
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
-- Tables and sequences that later migrations create (as this same user).
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO {role};
-- The log is appended and read, never changed.
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM {role};
-- Migrations are the operator's business, not the application's: it may only
-- read which revision the schema is at (for /ready).
REVOKE ALL ON alembic_version FROM {role};
GRANT SELECT ON alembic_version TO {role};
"""

# Every table keyed by tenant_id that exists now (whichever branch made it),
# except the keyring that authentication reads before the tenant is known.
ROW_LEVEL_SECURITY = """
DO $$
DECLARE
    t regclass;
    own constant text :=
        'tenant_id = nullif(current_setting(''ledger.tenant_id'', true), '''')::bigint';
BEGIN
    FOR t IN
        SELECT c.attrelid::regclass
        FROM pg_attribute c
        JOIN pg_class r ON r.oid = c.attrelid AND r.relkind IN ('r', 'p')
        JOIN pg_namespace n ON n.oid = r.relnamespace AND n.nspname = 'public'
        WHERE c.attname = 'tenant_id' AND NOT c.attisdropped
          AND r.relname NOT IN ('tenants', 'api_keys')
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_rows ON %s TO {app} USING (%s) WITH CHECK (%s)',
            t, own, own);
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    execute_script(
        CREATE_ROLE.format(role=APP_ROLE)
        + CREATE_WORKER_ROLE.format(role=WORKER_ROLE)
        + "".join(GRANTS.format(role=r) for r in (APP_ROLE, WORKER_ROLE))
        + ROW_LEVEL_SECURITY.format(app=APP_ROLE)
    )


def downgrade() -> None:
    # The roles themselves stay: other databases of the cluster may still use them.
    # DROP OWNED removes their privileges and policies in this database.
    execute_script(f"""
    DROP OWNED BY {APP_ROLE}, {WORKER_ROLE};
    DO $$
    DECLARE
        t regclass;
    BEGIN
        FOR t IN SELECT oid::regclass FROM pg_class WHERE relrowsecurity LOOP
            EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', t);
        END LOOP;
    END
    $$;
    """)
