"""The blueprint (filled in by the web layer)."""

from __future__ import annotations

from typing import Any


def register(extension: Any, app: Any, settings: Any) -> None:
    """Attach the blueprint, template global and CLI to ``app``."""
