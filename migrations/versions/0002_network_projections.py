"""Network projections: pairs, parties, timelines, and each projection's checkpoint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- Where each projection of each tenant stands. `generation` names the set of
    -- rows reads use: a rebuild fills the next generation beside the live one
    -- and switches to it in one transaction.
    CREATE TABLE projection_state (
        tenant_id            bigint NOT NULL REFERENCES tenants,
        projection           text NOT NULL,
        generation           integer NOT NULL DEFAULT 1,
        checkpoint_tx        bigint NOT NULL DEFAULT 0,
        checkpoint_position  bigint NOT NULL DEFAULT 0,
        events_applied       bigint NOT NULL DEFAULT 0,
        updated_at           timestamptz NOT NULL DEFAULT now(),
        worker               text,
        PRIMARY KEY (tenant_id, projection)
    );

    -- Two people's relationship, a < b; `_ab` columns are from a to b.
    CREATE TABLE network_pairs (
        tenant_id      bigint NOT NULL,
        generation     integer NOT NULL,
        a              text NOT NULL,
        b              text NOT NULL,
        given_ab       float8 NOT NULL,
        given_ba       float8 NOT NULL,
        favors_ab      integer NOT NULL,
        favors_ba      integer NOT NULL,
        contacts       integer NOT NULL,
        first_contact  timestamptz,
        last_contact   timestamptz,
        strength_log2  float8 NOT NULL,
        counts         jsonb NOT NULL,
        PRIMARY KEY (tenant_id, generation, a, b)
    );
    CREATE INDEX network_pairs_by_b ON network_pairs (tenant_id, generation, b);

    -- Who a favor or an introduction is between, for steps that name one person.
    CREATE TABLE network_parties (
        tenant_id   bigint NOT NULL,
        generation  integer NOT NULL,
        stream      text NOT NULL,
        parties     text[] NOT NULL,
        PRIMARY KEY (tenant_id, generation, stream)
    );

    CREATE TABLE timeline_person (
        tenant_id    bigint NOT NULL,
        generation   integer NOT NULL,
        person       text NOT NULL,
        occurred_at  timestamptz NOT NULL,
        position     bigint NOT NULL,
        event_id     uuid NOT NULL,
        PRIMARY KEY (tenant_id, generation, person, occurred_at, position)
    );

    CREATE TABLE timeline_pair (
        tenant_id    bigint NOT NULL,
        generation   integer NOT NULL,
        a            text NOT NULL,
        b            text NOT NULL,
        occurred_at  timestamptz NOT NULL,
        position     bigint NOT NULL,
        event_id     uuid NOT NULL,
        PRIMARY KEY (tenant_id, generation, a, b, occurred_at, position)
    );
    """)


def downgrade() -> None:
    execute_script("""
    DROP TABLE timeline_pair;
    DROP TABLE timeline_person;
    DROP TABLE network_parties;
    DROP TABLE network_pairs;
    DROP TABLE projection_state;
    """)
