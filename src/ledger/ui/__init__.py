"""``/ui``: a small page to look at a person's network, served as static files.

Vanilla JavaScript and inline SVG, no build step and nothing fetched from a
CDN: it must work where the ledger runs, offline included. The page calls the
public v1 API with a key the user pastes (kept in the tab's sessionStorage),
so it can show nothing the key could not read anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar.static_files import create_static_files_router

STATIC: Final = Path(__file__).resolve().parent / "static"

ROUTER: Final = create_static_files_router(
    path="/ui", directories=[STATIC], html_mode=True, name="ui"
)
