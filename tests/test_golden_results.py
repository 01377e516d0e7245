"""Golden test: the results JSON of a small audit is byte-for-byte what it was before a refactor.

The model is a tiny CNN whose weights are a fixture (tests/golden/*.safetensors), evaluated in
float64 so that the CPU's kernel choice cannot flip a decision. Everything in the results but the
timings must equal tests/golden/audit_tiny.json. After an intended change of results, regenerate
with ``ROBAUDIT_UPDATE_GOLDEN=1 pytest tests/test_golden_results.py`` and say why in the commit.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import robaudit
from robaudit.evaluation import build_spec, evaluate

GOLDEN = Path(__file__).parent / "golden"


class TinyCNN(nn.Module):
    """About 6,000 weights, float64 inside; takes and returns float32 like any robaudit model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double()).float()


def _train(seed: int, n: int) -> TinyCNN:
    """How the fixture weights were made (once; the test loads the saved ones)."""
    torch.manual_seed(seed)
    x, y = robaudit.load_dataset("mnist10k", "train")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(2):
        perm = torch.randperm(n)
        for i in range(0, n, 100):
            idx = perm[i:i + 100]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _load(name: str, seed: int, n: int) -> TinyCNN:
    path = GOLDEN / f"{name}.safetensors"
    if not path.exists():
        save_file(_train(seed, n).state_dict(), str(path))
    model = TinyCNN()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def _without_timings(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "timing"}


def test_audit_results_equal_the_golden_file():
    torch.set_num_threads(1)
    model, surrogate = _load("tiny", 0, 4000), _load("tiny_surrogate", 1, 2000)
    x, y = robaudit.load_dataset("mnist10k", "test")
    spec = build_spec("audit", dataset="mnist10k", eps=(0.1, 0.05), n_examples=48, surrogate=True, batch_size=16,
                      autoattack_examples=16)
    results = json.loads(json.dumps(_without_timings(evaluate(model, x, y, spec, surrogate=surrogate))))
    path = GOLDEN / "audit_tiny.json"
    if os.environ.get("ROBAUDIT_UPDATE_GOLDEN") or not path.exists():
        path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert set(results) == set(expected)
    for key in sorted(expected):
        assert results[key] == expected[key], f"results[{key!r}] changed"
