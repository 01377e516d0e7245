"""A bad data folder or database stops the API at start with one line and a non-zero exit code
(issue 13, item 7), through `robaudit serve`, the uvicorn app factory and create_app itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robaudit.backend.app.core.startup import StartupError
from robaudit.backend.app.main import create_app

from .conftest import TOKEN, free_port, make_settings

PY = sys.executable


def serve_argv(data_dir: Path) -> list[str]:
    return [PY, "-m", "robaudit.cli", "serve", "--data-dir", str(data_dir), "--port", str(free_port()),
            "--no-worker"]


def demo_argv(data_dir: Path) -> list[str]:
    # demo and study start the embedded service through the same launcher helper (drive_embedded)
    return [PY, "-m", "robaudit.cli", "demo", "--data-dir", str(data_dir), "--port", str(free_port())]


def factory_argv() -> list[str]:
    return [PY, "-m", "uvicorn", "--factory", "robaudit.backend.app.main:app_from_env", "--port", str(free_port())]


def run(argv: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    # The timeout only bounds a failure: a service that wrongly starts would otherwise run forever.
    env = {**os.environ, "ROBAUDIT_API_TOKEN": TOKEN, "ROBAUDIT_DATA_DIR": str(data_dir)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("robaudit: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr


def test_a_corrupt_database_stops_the_start_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "robaudit.db").write_bytes(b"not a database, " * 1000)
    with pytest.raises(StartupError, match="robaudit.db is unreadable .file is not a database.: move it aside"):
        create_app(make_settings(data), janitor=False)
    for argv in (serve_argv(data), factory_argv(), demo_argv(data)):
        assert_one_line_failure(run(argv, data), "robaudit.db is unreadable", "move it aside")


def test_a_data_dir_that_is_a_file_stops_the_start_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.write_text("a file where the data folder should be")
    for argv in (serve_argv(data), factory_argv(), demo_argv(data)):
        assert_one_line_failure(run(argv, data), f"the data folder {data} is a file, not a folder")


def test_a_read_only_data_dir_stops_the_start_in_one_line(tmp_path):
    """The data folder is set up (database migrated), then bind-mounted read-only onto itself inside a
    user + mount namespace (`unshare -rm`, no privileges needed), and the service started there.

    Not chmod: these tests run as root, whom permission bits do not stop, but a read-only mount stops
    everyone: writes fail with EROFS as on a read-only filesystem. The database opens and migrates
    fine (it is up to date and only read), so only the start-up write check can catch it."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("user namespaces are unavailable here (unshare -rm), so no read-only bind can be made")
    data = tmp_path / "data"
    create_app(make_settings(data), janitor=False)   # a healthy, migrated data folder
    for argv in (serve_argv(data), factory_argv()):
        in_read_only_bind = ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(data),
                             *argv]
        assert_one_line_failure(run(in_read_only_bind, data), f"the data folder {data} is not writable",
                                "Read-only file system")
    assert not list(data.glob(".write-check-*"))
