"""Every projection the projector keeps, by name (``ledger projections ...``, the API)."""

from __future__ import annotations

from typing import Final

from ledger.projections.projector import NETWORK, Projection
from ledger.rules.projection import VIOLATIONS

PROJECTIONS: Final[dict[str, Projection]] = {p.name: p for p in (NETWORK, VIOLATIONS)}
