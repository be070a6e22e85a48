"""Operating the ledger: structured logs with request ids, Prometheus metrics,
readiness. Adapters only; nothing here decides anything about the ledger."""
