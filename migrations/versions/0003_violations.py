"""Violations: the facts rules read, the violations they found, and events by valid time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from ledger.store.migrate import execute_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- What each event says about a pair of people (a < b), as the rules read it
    -- (ledger.rules.history). Indexed by pair and time: re-judging after a late
    -- arrival reads the pairs it touched and the events after it on them.
    CREATE TABLE rule_facts (
        tenant_id    bigint NOT NULL,
        generation   integer NOT NULL,
        a            text NOT NULL,
        b            text NOT NULL,
        occurred_at  timestamptz NOT NULL,
        position     bigint NOT NULL,
        event_id     uuid NOT NULL,
        kind         text NOT NULL,
        actor        text NOT NULL,
        other        text NOT NULL,
        stream       text NOT NULL,
        detail       text NOT NULL
    );
    CREATE INDEX rule_facts_pair ON rule_facts (tenant_id, generation, a, b, occurred_at, position);
    -- Event first: with (tenant_id, generation) leading, a planner without
    -- statistics took it for pair lookups and filtered a whole generation.
    CREATE INDEX rule_facts_event ON rule_facts (event_id, tenant_id, generation);

    CREATE TABLE violations (
        tenant_id    bigint NOT NULL,
        generation   integer NOT NULL,
        id           uuid NOT NULL,
        event_id     uuid NOT NULL,
        code         text NOT NULL,
        severity     text NOT NULL,
        offender     text NOT NULL,
        affected     text[] NOT NULL,
        evidence     uuid[] NOT NULL,
        occurred_at  timestamptz NOT NULL,
        position     bigint NOT NULL,
        explanation  text NOT NULL,
        PRIMARY KEY (tenant_id, generation, id)
    );
    CREATE INDEX violations_order ON violations (tenant_id, generation, occurred_at, position, id);
    CREATE INDEX violations_event ON violations (event_id, tenant_id, generation);
    CREATE INDEX violations_offender
        ON violations (tenant_id, generation, offender, occurred_at, position, id);
    CREATE INDEX violations_affected ON violations USING gin (affected);

    -- Violations as they were found, for the violations feed: numbered per
    -- tenant by the projector, which writes a tenant under one lock at a time,
    -- so a follower reading "after n" never misses a row committed later.
    CREATE TABLE violation_feed (
        tenant_id     bigint NOT NULL,
        seq           bigint NOT NULL,
        violation_id  uuid NOT NULL,
        code          text NOT NULL,
        offender      text NOT NULL,
        affected      text[] NOT NULL,
        body          jsonb NOT NULL,
        found_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, seq)
    );

    -- A full re-derivation judges events in valid-time order.
    CREATE INDEX events_valid_time ON events (tenant_id, occurred_at, position);
    """)


def downgrade() -> None:
    execute_script("""
    DROP INDEX events_valid_time;
    DROP TABLE violation_feed;
    DROP TABLE violations;
    DROP TABLE rule_facts;
    """)
