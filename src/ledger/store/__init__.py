"""The event store: PostgreSQL tables, appends, reads and cursors (asyncpg, no ORM)."""
