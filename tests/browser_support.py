"""What every browser test shares: Debian's chromium driven by Playwright (never a downloaded browser)
and a watch on what the pages' Content-Security-Policy blocks. The `browser` fixture (one per test
module) is in tests/browser/conftest.py."""
from __future__ import annotations

import os

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
