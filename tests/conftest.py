"""Suite-wide hooks: a run that skipped tests says so loudly at the end, suite by suite.

Locally, the service and browser suites skip when PostgreSQL, Redis or chromium is missing (under
CI=1 they fail instead), so a green `make test` on a laptop could hide that they never ran.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # `make test` runs two pytest processes (pytest-xdist); each keeps to one thread, here and in the
    # subprocesses its tests start: two torch pools of two threads on a 2-core machine oversubscribe it.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _suite(nodeid: str) -> str:
    parts = Path(nodeid.split("::")[0]).parts
    inner = parts[1:-1] if parts and parts[0] == TESTS.name else parts[:-1]
    return "tests/" + "/".join(inner) if inner else "tests (core)"


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    by_suite: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for report in skipped:
        by_suite[_suite(report.nodeid)][_reason(report)] += 1
    bar = "!" * 100
    terminalreporter.write_line(bar, yellow=True, bold=True)
    terminalreporter.write_line(f"NOT EVERYTHING RAN: {len(skipped)} tests skipped", yellow=True, bold=True)
    for suite, reasons in sorted(by_suite.items()):
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"  {suite}: {count} skipped: {reason}", yellow=True)
    terminalreporter.write_line("  Start the missing services (scripts/test-services.sh) or run with CI=1 to make "
                                "them failures.", yellow=True)
    terminalreporter.write_line(bar, yellow=True, bold=True)
