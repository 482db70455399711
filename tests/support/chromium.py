"""Debian's Chromium, driven by Playwright, as every browser test launches it (no download)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def launch() -> Iterator[object]:
    """Headless Debian Chromium with the flags this machine needs; closed on exit."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
