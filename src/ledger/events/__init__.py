"""The event vocabulary: wire types, per-type facts, and lifecycle rules (pure)."""
