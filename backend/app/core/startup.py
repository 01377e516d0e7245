"""Checks that make a bad data folder or database stop the API at start, in one line.

Without them a corrupt robaudit.db ended in a long traceback, and a data folder on a read-only
filesystem started "healthy" and then answered 500 on every write. StartupError is a
RobauditError, so `robaudit serve` prints it as one line and exits with code 2.
"""
from __future__ import annotations

import tempfile

from sqlalchemy.exc import SQLAlchemyError

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import run_migrations
from robaudit.errors import RobauditError


class StartupError(RobauditError):
    pass


def check_data_dir(settings: Settings) -> None:
    """Create the data folders and write (then remove) a file in each, as every upload and job will."""
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        raise StartupError(f"the data folder {settings.data_dir} is a file, not a folder; set ROBAUDIT_DATA_DIR "
                           "or --data-dir to a folder this process can write")
    try:
        settings.ensure_dirs()
        for folder in (settings.data_dir, settings.checkpoints_dir, settings.jobs_dir, settings.tmp_dir):
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
    except OSError as exc:
        raise StartupError(f"the data folder {settings.data_dir} is not writable ({exc.strerror or exc}: "
                           f"{exc.filename}); set ROBAUDIT_DATA_DIR or --data-dir to a folder this process "
                           "can write") from None


def migrate(settings: Settings) -> None:
    """Apply the migrations; a database that cannot be opened or migrated is a StartupError."""
    try:
        run_migrations(settings)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if settings.is_sqlite:
            path = settings.data_dir / "robaudit.db"
            raise StartupError(f"the database {path} is unreadable ({reason}): move it aside to start with an "
                               "empty one, or restore it from a backup") from None
        raise StartupError(f"the database cannot be opened or migrated ({reason}): check DATABASE_URL and "
                           "that the server is up") from None
