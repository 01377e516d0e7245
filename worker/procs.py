"""Process liveness on this host, as the claim and restart logic needs it."""
from __future__ import annotations

import os
from pathlib import Path

# A worker started with this variable set to a pid shuts down when that process is gone (robaudit.worker.tasks);
# the embedded service sets it to its own pid.
EXIT_WITH_ENV = "ROBAUDIT_EXIT_WITH_PID"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True   # no /proc: trust kill(0)
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux: read from /proc; elsewhere none are found)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
