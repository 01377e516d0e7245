"""What every browser test shares: Debian's chromium driven by Playwright (never a downloaded browser),
and a tab that records what the pages' Content-Security-Policy blocks and their script errors. The
`browser` fixture (one per test module) is in tests/browser/conftest.py."""
from __future__ import annotations

import os
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Every page records what its Content-Security-Policy blocked (before any of the page's own scripts run).
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "?") + " at " +
                              e.sourceFile + ":" + e.lineNumber);
});
"""


def require_chromium() -> None:
    """Skip without chromium; under CI (which installs it, .ci/run) fail instead."""
    if os.access(CHROMIUM, os.X_OK):
        return
    what = f"{CHROMIUM} is not installed (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def open_tab(browser: Any, *, timeout_ms: int = 20_000, **context_args: Any) -> tuple[Any, Any]:
    """A new context and page (1360x900) with the CSP watch; the page's script errors collect in
    ``page.js_errors``. Returns (context, page); close the context when done."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, **context_args)
    ctx.add_init_script(CSP_WATCH)
    pg = ctx.new_page()
    pg.set_default_timeout(timeout_ms)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    return ctx, pg


def assert_clean(pg: Any) -> None:
    """Nothing was blocked by the Content-Security-Policy and no script failed."""
    assert pg.evaluate("window.__cspViolations") == [], pg.evaluate("window.__cspViolations")
    assert pg.js_errors == [], pg.js_errors

