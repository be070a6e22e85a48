"""The application's database role, ``ledger_app``: what the API needs, and no way
to rewrite the log.

The events table's triggers refuse UPDATE, DELETE and TRUNCATE from anyone, but a
superuser can drop a trigger. The API therefore runs as ``ledger_app`` (see
``ledger.store.database.create_pool``), which holds no UPDATE, DELETE or TRUNCATE
on events at all: a second wall, enforced by privileges instead of code.

Roles are cluster-wide while migrations run per database, often many at once in
one cluster (test databases): creating the role tolerates another database
having made it first, or making it at this very moment.

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

ROLE = "ledger_app"

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
-- Migrations are the operator's business, not the API's.
REVOKE ALL ON alembic_version FROM {role};
"""


def upgrade() -> None:
    execute_script(CREATE_ROLE.format(role=ROLE) + GRANTS.format(role=ROLE))


def downgrade() -> None:
    # The role itself stays: other databases of the cluster may still use it.
    execute_script(f"DROP OWNED BY {ROLE};")
