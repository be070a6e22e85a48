"""An event-sourced networking ledger."""
