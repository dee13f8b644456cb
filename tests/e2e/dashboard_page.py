"""The dashboard in Debian's headless Chromium: a tab that records its errors (the `browser` fixture is in
conftest.py). Shared by the dashboard tests."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pipeline_harness import run

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = ("chromium is not installed: `make test` installs it with apt-get when run as root "
               "(apt-get install chromium); without a browser the dashboard cannot be loaded")
# The page polls every 2 s, needs two polls for a first rate and five idle ones for a rate
# of 0 (it averages over 10 s): 30 s leaves room for Chromium sharing 2 cores with the
# worker and the stack.
PAGE_DEADLINE_MS = 30_000


def run_in_thread(coro: Any) -> Any:
    """asyncio.run in a thread of its own: playwright's sync API keeps an event loop on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run, coro).result()


class Page:
    """A dashboard tab, with every console error and uncaught exception it produced."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        self.page.goto(url)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("() => window.dashboardState")

    def wait(self, predicate: str, what: str, arg: Any = None, timeout_ms: int = PAGE_DEADLINE_MS) -> None:
        """Wait for a JS predicate `(s, arg) => bool` over window.dashboardState."""
        try:
            self.page.wait_for_function(
                f"(arg) => {{ const s = window.dashboardState; return !!s && ({predicate})(s, arg); }}",
                arg=arg, timeout=timeout_ms)
        except sync_api.TimeoutError:
            raise AssertionError(f"timed out after {timeout_ms / 1000:.0f}s waiting for the page to show {what}; "
                                 f"state: {json.dumps(self.state())[:2000]}") from None

    def stat(self, element_id: str) -> str | None:
        """The raw number a status widget shows, from its data-value."""
        return self.page.get_attribute(f"#{element_id}", "data-value")
