"""How robaudit behaves once installed: no generic top-level names, and the science without the service.

Each check runs in a fresh interpreter, because what is importable (a user's own ``models``
package, missing service extras) must be in place before robaudit is first imported.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers_training import mnist_metadata, mnist_model

from robaudit.models import save_checkpoint

# The top-level modules of the [service] extras; the science must import none of them.
SERVICE_MODULES = ("fastapi", "starlette", "celery", "kombu", "sqlalchemy", "alembic", "uvicorn", "plotly",
                   "jinja2", "httpx", "psycopg", "redis", "multipart")

# Installed first thing in the child interpreter: every service module then fails to import,
# as it does after a plain `pip install robaudit`.
REFUSE_SERVICE_EXTRAS = textwrap.dedent(f"""
    import sys

    class RefuseServiceExtras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {SERVICE_MODULES!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, RefuseServiceExtras())
""")


def run_python(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def small_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, mnist_model(width=4), mnist_metadata(arch_kwargs={"width": 4}))


# --- no generic names ---------------------------------------------------------------------------

def test_python_api_works_from_a_folder_with_its_own_models_package(tmp_path):
    checkpoint = small_checkpoint(tmp_path / "model.safetensors")
    research = tmp_path / "research"   # like a TRADES checkout: `from models.wideresnet import *`
    for name in ("models", "backend", "worker", "frontend", "launch"):
        (research / name).mkdir(parents=True)
        (research / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package')\n")
    script = research / "use_robaudit.py"   # its folder is sys.path[0], ahead of site-packages
    script.write_text(textwrap.dedent(f"""
        import importlib

        import torch

        # The trap is armed: these names resolve to the user's packages here.
        for name in ("models", "backend", "worker", "frontend", "launch"):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                assert "the user's own" in str(exc), exc
            else:
                raise AssertionError(name + " imported")

        import robaudit

        torch.set_num_threads(1)
        model = robaudit.load_model({str(checkpoint)!r})
        x, y = robaudit.load_dataset("mnist10k", "test")
        print(tuple(x.shape), tuple(y.shape), tuple(model(x[:4]).shape))
    """))
    proc = run_python(script, cwd=research)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "(2000, 1, 28, 28) (2000,) (4, 10)"


# --- the science without the service extras -----------------------------------------------------

def cli_without_service_extras(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "robaudit_without_service.py"
    if not script.exists():
        script.write_text(REFUSE_SERVICE_EXTRAS + textwrap.dedent("""
            import torch

            torch.set_num_threads(1)   # the test machine's cores are shared

            from robaudit.cli import main

            code = main(sys.argv[1:])
            leaked = sorted(m for m in sys.modules if m.split(".")[0] in SERVICE_MODULES)
            assert not leaked, leaked
            sys.exit(code)
        """).replace("SERVICE_MODULES", repr(SERVICE_MODULES)))
    return run_python(script, *argv, cwd=tmp_path)


def test_help_lists_the_science_commands_without_service_extras(tmp_path):
    proc = cli_without_service_extras(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "evaluate" in proc.stdout
    assert "serve     (unavailable: pip install 'robaudit[service]')" in proc.stdout


def test_service_command_without_extras_is_one_line_naming_the_install(tmp_path):
    for argv in (["serve"], ["serve", "--port", "9000"], ["serve", "--help"]):
        proc = cli_without_service_extras(tmp_path, *argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("robaudit: error: `robaudit serve` needs the service extras (")
        assert lines[0].endswith("is not installed): pip install 'robaudit[service]'")


def test_train_then_evaluate_without_service_extras(tmp_path):
    run = tmp_path / "run"
    proc = cli_without_service_extras(
        tmp_path, "train", "--method", "feature-scatter", "--dataset", "mnist10k", "--arch", "smallcnn",
        "--arch-kwargs", '{"width": 4}', "--epochs", "1", "--batch-size", "64", "--n-train", "128",
        "--eval-examples", "8", "--device", "cpu", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "history.json").read_text())["epochs"][0]["epoch"] == 1

    results = tmp_path / "results.json"
    proc = cli_without_service_extras(tmp_path, "evaluate", str(run / "model.safetensors"), "--preset", "quick",
                                      "--n-examples", "16", "--out", str(results), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(results.read_text())
    assert data["n"] == 16 and data["dataset"] == "mnist10k"
    assert {row["attack"] for row in data["summary"]} >= {"fgsm", "pgd", "cw"}


class FakeEntryPoint:
    """A service command whose launcher imports ``missing`` only when the command runs."""

    def __init__(self, name: str, missing: str) -> None:
        self.name, self.missing = name, missing

    def load(self):
        def register(sub):
            def run(args):
                raise ModuleNotFoundError(f"No module named {self.missing!r}", name=self.missing)
            sub.add_parser(self.name).set_defaults(func=run)
        return register


def test_extras_missing_when_a_service_command_runs_is_one_line_too(monkeypatch, capsys):
    import robaudit.cli

    monkeypatch.setattr(robaudit.cli, "entry_points", lambda group: [FakeEntryPoint("fake-serve", "uvicorn")])
    assert robaudit.cli.main(["fake-serve"]) == 2
    assert capsys.readouterr().err == ("robaudit: error: `robaudit fake-serve` needs the service extras "
                                       "(uvicorn is not installed): pip install 'robaudit[service]'\n")


def test_a_missing_robaudit_module_is_a_bug_not_missing_extras(monkeypatch):
    import robaudit.cli

    monkeypatch.setattr(robaudit.cli, "entry_points",
                        lambda group: [FakeEntryPoint("fake-serve", "robaudit.launch.gone")])
    with pytest.raises(ModuleNotFoundError, match="robaudit.launch.gone"):
        robaudit.cli.main(["fake-serve"])
