"""Reads in page order for people with thousands of counterparties ("hubs").

Balances, a relationship and a person's violations used to gather all of a
person's rows and sort them before answering one page, so a hub's p99 grew
with its history (4.2x, 2.3x and 3.7x from 100k to 1M events). These
indexes and the ``violation_people`` table let each read walk an index in
its page's order and stop after the page:

* ``network_pairs_balances_{a,b}``: a person's pairs with a balance (contact-
  only pairs left out), by counterparty, from either side (a pair is stored
  once, ``a < b``), carrying the amounts so the walk need not visit the table.
  ``COLLATE "C"`` is code point order, the order Python sorts strings in and
  the API has always listed balances in, whatever the database's collation.
* ``network_pairs_strength_{a,b}``: a person's pairs, strongest first, so a
  relationship's rank (its cadence) is a count over an index instead of a
  read of every relationship.
* ``violation_people``: each violation once per person it involves (offender
  and affected), in the list's order. The GIN index on ``affected`` finds a
  person's violations but cannot give them in order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from ledger.store.migrate import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE INDEX network_pairs_balances_a
        ON network_pairs (tenant_id, generation, a, b COLLATE "C") INCLUDE (given_ab, given_ba)
        WHERE given_ab <> 0 OR given_ba <> 0;
    CREATE INDEX network_pairs_balances_b
        ON network_pairs (tenant_id, generation, b, a COLLATE "C") INCLUDE (given_ab, given_ba)
        WHERE given_ab <> 0 OR given_ba <> 0;
    CREATE INDEX network_pairs_strength_a
        ON network_pairs (tenant_id, generation, a, strength_log2 DESC, b COLLATE "C");
    CREATE INDEX network_pairs_strength_b
        ON network_pairs (tenant_id, generation, b, strength_log2 DESC, a COLLATE "C");

    CREATE TABLE violation_people (
        tenant_id    bigint NOT NULL,
        generation   integer NOT NULL,
        person       text NOT NULL,
        occurred_at  timestamptz NOT NULL,
        position     bigint NOT NULL,
        id           uuid NOT NULL,
        PRIMARY KEY (tenant_id, generation, person, occurred_at, position, id)
    );
    INSERT INTO violation_people (tenant_id, generation, person, occurred_at, position, id)
    SELECT DISTINCT v.tenant_id, v.generation, who.person, v.occurred_at, v.position, v.id
    FROM violations v, unnest(array_prepend(v.offender, v.affected)) AS who(person);

    -- As every tenant table (migration 0006): API requests see their tenant's rows only.
    ALTER TABLE violation_people ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON violation_people TO ledger_app
        USING (tenant_id = nullif(current_setting('ledger.tenant_id', true), '')::bigint)
        WITH CHECK (tenant_id = nullif(current_setting('ledger.tenant_id', true), '')::bigint);
    GRANT SELECT, INSERT, UPDATE, DELETE ON violation_people TO ledger_app, ledger_worker;
    """)


def downgrade() -> None:
    execute_script("""
    DROP TABLE violation_people;
    DROP INDEX network_pairs_strength_b;
    DROP INDEX network_pairs_strength_a;
    DROP INDEX network_pairs_balances_b;
    DROP INDEX network_pairs_balances_a;
    """)
