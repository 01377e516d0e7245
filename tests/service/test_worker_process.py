"""The worker's prefork parent must never initialise CUDA: it imports no torch at all, and the
Celery settings are the ones long GPU jobs need."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import make_settings

PROBE = r"""
import json, sys
import robaudit.worker.celery_app as celery_app
import robaudit.worker.tasks  # noqa: F401  (what `celery -A robaudit.worker.celery_app worker` imports in the parent)
app = celery_app.app
app.loader.import_default_modules()   # the worker's own import step (include=["robaudit.worker.tasks"])
app.finalize(auto=True)
conf = app.conf
cuda = None
if "torch" in sys.modules:
    cuda = sys.modules["torch"].cuda.is_initialized()
print(json.dumps({
    "torch_imported": "torch" in sys.modules, "cuda_initialized": cuda,
    "bare_models_imported": "models" in sys.modules,
    "tasks": sorted(t for t in app.tasks if t.startswith("robaudit")),
    "acks_late": conf.task_acks_late, "prefetch": conf.worker_prefetch_multiplier,
    "concurrency": conf.worker_concurrency, "max_tasks_per_child": conf.worker_max_tasks_per_child,
    "reject_on_worker_lost": conf.task_reject_on_worker_lost,
    "cancel_on_connection_loss": conf.worker_cancel_long_running_tasks_on_connection_loss,
    "serializers": [conf.task_serializer, conf.result_serializer, sorted(conf.accept_content)],
    "time_limit": conf.task_time_limit, "soft_time_limit": conf.task_soft_time_limit,
    "visibility": [conf.broker_transport_options.get("visibility_timeout"),
                   conf.result_backend_transport_options.get("visibility_timeout"), conf.visibility_timeout],
}))
"""


def _probe(settings) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**settings.to_env(), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_worker_parent_never_imports_torch_and_uses_long_job_settings(tmp_path, redis_url):
    settings = make_settings(tmp_path / "data", redis_url=redis_url, task_time_limit_s=7200)
    got = _probe(settings)
    assert got["torch_imported"] is False and got["cuda_initialized"] is None
    assert got["bare_models_imported"] is False
    assert got["tasks"] == ["robaudit.run_job", "robaudit.run_shard"]
    assert got["acks_late"] and got["prefetch"] == 1 and got["concurrency"] == 1
    assert got["max_tasks_per_child"] == 1 and got["reject_on_worker_lost"] and got["cancel_on_connection_loss"]
    assert got["serializers"] == ["json", "json", ["json"]]
    assert got["time_limit"] == 7200 and 0 < got["soft_time_limit"] < 7200
    assert all(v is not None and v > 7200 for v in got["visibility"]), got["visibility"]


def test_embedded_broker_is_sqlite_in_the_data_folder(tmp_path):
    settings = make_settings(tmp_path / "data")
    assert settings.broker_url == f"sqla+sqlite:///{(tmp_path / 'data' / 'broker.sqlite').resolve()}"
    got = _probe(settings)
    assert got["torch_imported"] is False and got["acks_late"]
