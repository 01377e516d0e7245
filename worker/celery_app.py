"""The worker's Celery app: `celery -A robaudit.worker.celery_app worker` (what `robaudit worker` and
`robaudit serve` run).

Built from the backend core's factory, plus the task module. Neither this module nor
robaudit.worker.tasks imports torch or the science: the prefork parent must never initialise
CUDA, so the task imports them inside, in the child.
"""
from __future__ import annotations

from robaudit.backend.app.core.celery_app import make_celery
from robaudit.backend.app.core.config import Settings

app = make_celery(Settings.from_env(), include=["robaudit.worker.tasks"])

# Pool children start as fresh interpreters (spawn), not as forks of the parent: the parent has
# threads inside SQLite at any moment (the presence loop, the SQL broker's poll), and a child forked
# while one of them held SQLite's mutex blocked forever in its first query.
import billiard  # noqa: E402

billiard.set_start_method("spawn", force=True)
