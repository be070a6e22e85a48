"""Prometheus metrics: what the API counts as it serves, and gauges read from
the database when scraped.

No metric is labelled by tenant: ``/metrics`` is meant for an operator's
scraper, unauthenticated, and must not tell anyone which tenants exist or how
busy each is. Lag is reported per projection, as the worst tenant's.

Other capabilities add their own gauges with :func:`gauge_source` (webhooks:
backlog and failures), read at each scrape from the same pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Literal

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ledger.projections import projector
from ledger.store.database import Connection, Pool

CONTENT_TYPE: Final = "text/plain; version=0.0.4"  # Litestar adds the charset
SOURCE_TIMEOUT_SECONDS: Final = 5.0
APPEND_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Gauge(msgspec.Struct, frozen=True, kw_only=True):
    """One sample read at scrape time. ``kind="counter"`` for totals kept in the
    database (deliveries failed so far); the name then ends in ``_total``."""

    name: str
    help: str
    value: float
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    kind: Literal["gauge", "counter"] = "gauge"


GaugeSource = Callable[[Connection], Awaitable[Iterable[Gauge]]]
_SOURCES: Final[list[GaugeSource]] = []
_log = logging.getLogger("ledger.metrics")
# `*_created` timestamps double every series for little use in a scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]


def gauge_source(source: GaugeSource) -> GaugeSource:
    """Register ``source`` to be read at every scrape (a decorator); it gets a
    pooled connection and answers samples without tenant labels."""
    _SOURCES.append(source)
    return source


class Metrics:
    """One app's counters, in a registry of its own (several apps in one test
    process never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "ledger_appends",
            "POST /v1/events by outcome: created (201), replayed (200, a retry), rejected",
            ["outcome"],
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "ledger_append_duration_seconds",
            "Time to answer POST /v1/events, successful or not",
            buckets=APPEND_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "ledger_rejected_requests",
            "Requests answered with a problem (RFC 9457), by its type and status",
            ["reason", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "ledger_http_requests",
            "Requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )

    async def render(self, pool: Pool) -> bytes:
        """The text exposition: the counters, then every gauge source's samples.

        A source that fails (the database is down, a table is missing) is
        reported as ``ledger_gauge_source_up{source=...} 0`` instead of failing
        the scrape: the counters are most useful exactly then.
        """
        samples: list[Gauge] = []
        for source in _SOURCES:
            try:
                async with asyncio.timeout(SOURCE_TIMEOUT_SECONDS), pool.acquire() as conn:
                    samples += await source(conn)
                up = 1.0
            except Exception:
                _log.warning("gauge source %s failed", source.__name__, exc_info=True)
                up = 0.0
            samples.append(
                Gauge(
                    name="ledger_gauge_source_up",
                    help="Whether a gauge source answered at this scrape (1) or failed (0)",
                    value=up,
                    labels={"source": source.__name__},
                )
            )
        return generate_latest(self.registry) + generate_latest(_Families(samples))


class _Families:
    """Samples grouped into metric families, as ``generate_latest`` reads them."""

    def __init__(self, samples: list[Gauge]) -> None:
        self.samples = samples

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for sample in self.samples:
            family = families.get(sample.name)
            if family is None:
                labels = sorted(sample.labels)
                if sample.kind == "counter":
                    family = CounterMetricFamily(
                        sample.name.removesuffix("_total"), sample.help, labels=labels
                    )
                else:
                    family = GaugeMetricFamily(sample.name, sample.help, labels=labels)
                families[sample.name] = family
            family.add_metric([sample.labels[k] for k in sorted(sample.labels)], sample.value)
        return families.values()


@gauge_source
async def projection_lag(conn: Connection) -> list[Gauge]:
    """The worst tenant's lag per projection: what an alert should look at."""
    rows = await projector.status(conn)
    by_projection: dict[str, list[projector.Status]] = {}
    for row in rows:
        by_projection.setdefault(row.projection, []).append(row)
    by_projection.setdefault(projector.PROJECTION, [])
    gauges = []
    for name, statuses in sorted(by_projection.items()):
        labels = {"projection": name}
        gauges += [
            Gauge(
                name="ledger_projection_lag_events",
                help="Events in the log not yet projected (the furthest-behind tenant)",
                value=max((s.lag_events for s in statuses), default=0),
                labels=labels,
            ),
            Gauge(
                name="ledger_projection_lag_seconds",
                help="Age of the oldest event not yet projected (the furthest-behind tenant)",
                value=max((s.lag_seconds or 0.0 for s in statuses), default=0.0),
                labels=labels,
            ),
            Gauge(
                name="ledger_projection_tenants_behind",
                help="Tenants with events not yet projected",
                value=sum(1 for s in statuses if s.lag_events),
                labels=labels,
            ),
        ]
    return gauges


_OLDEST_TRANSACTION: Final = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)::float8
FROM pg_stat_activity WHERE backend_xid IS NOT NULL
"""


@gauge_source
async def horizon_age(conn: Connection) -> list[Gauge]:
    """How long the oldest writing transaction has held the commit horizon back
    (see :mod:`ledger.store.read`): followers see nothing newer until it ends."""
    age = await conn.fetchval(_OLDEST_TRANSACTION)
    return [
        Gauge(
            name="ledger_horizon_age_seconds",
            help="Age of the oldest running transaction that holds the log's commit horizon back",
            value=float(age),
        )
    ]
