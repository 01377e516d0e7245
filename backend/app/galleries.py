"""Where the service keeps an evaluation's adversarial-example gallery, and how pages read it a slice at a time.

The worker's merge writes ``<data_dir>/galleries/<evaluation id>/``:

* ``adversarial.npz``: the download (robaudit.evaluation.gallery.save_npz, float32, compressed);
* ``panels.npy``: (k, 3, H, W, C) uint8, clean | adversarial | magnified perturbation, for display only,
  read memory-mapped so a page of 24 out of 10,000 points touches only those 24;
* ``index.json``: one small entry per point (what the filters look at), plus the class names.

The folder is written under a temporary name and renamed, so a reader sees all three files or none.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from robaudit.backend.app.core.config import Settings
from robaudit.evaluation import gallery as G

NPZ, PANELS, INDEX = "adversarial.npz", "panels.npy", "index.json"
PAGE_MAX = 100


def folder(settings: Settings, job_id: int) -> Path:
    return settings.data_dir / "galleries" / str(int(job_id))


def save(settings: Settings, job_id: int, gallery: G.Gallery) -> None:
    """Write the gallery's files for ``job_id`` (replacing any earlier ones, e.g. from a repeated merge)."""
    target = folder(settings, job_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{job_id}."))
    try:
        G.save_npz(gallery, tmp / NPZ)
        np.save(tmp / PANELS, G.panels(gallery))
        names = G.class_names(gallery.dataset, gallery.num_classes)
        points = [{"row": i, "index": int(gallery.index[i]), "attack": gallery.attack[i],
                   "eps": float(f"{gallery.attack_eps[i]:.6g}"), "step": int(gallery.step[i]),
                   "detail": gallery.detail[i], "true": int(gallery.labels[i]),
                   "predicted": int(gallery.predictions[i]), "missed": bool(gallery.missed_pgd20[i])}
                  for i in range(len(gallery))]
        index = {"dataset": gallery.dataset, "eps": gallery.eps, "limit": gallery.limit, "class_names": names,
                 "size": int(gallery.clean.shape[-1]) if len(gallery) else 0, "points": points}
        (tmp / INDEX).write_text(json.dumps(index, separators=(",", ":")))
        old = target.with_name(f".{job_id}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def npz_path(settings: Settings, job_id: int) -> Path | None:
    path = folder(settings, job_id) / NPZ
    return path if path.is_file() else None


@lru_cache(maxsize=16)
def _index(path: str, mtime_ns: int) -> dict[str, Any]:   # keyed by mtime: a re-merged gallery is read anew
    loaded: dict[str, Any] = json.loads(Path(path).read_text())
    return loaded


def read_index(settings: Settings, job_id: int) -> dict[str, Any] | None:
    path = folder(settings, job_id) / INDEX
    try:
        return _index(str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        return None


def page(settings: Settings, job_id: int, *, offset: int = 0, limit: int = 24, attack: str | None = None,
         true_class: int | None = None, missed: bool = False) -> dict[str, Any] | None:
    """One page of the gallery (filtered by attack, true class, missed by PGD-20), pictures as PNG data URIs."""
    index = read_index(settings, job_id)
    if index is None:
        return None
    points = [p for p in index["points"]
              if (attack is None or p["attack"] == attack) and (true_class is None or p["true"] == true_class)
              and (not missed or p["missed"])]
    names = index["class_names"]
    every = index["points"]
    return {"total": len(points), "count": len(every), "offset": offset, "limit": index["limit"],
            "eps": index["eps"], "items": _items(settings, job_id, index, points[offset:offset + min(limit, PAGE_MAX)]),
            "attacks": sorted({p["attack"] for p in every}),
            "classes": [{"id": k, "name": _name(names, k)} for k in sorted({p["true"] for p in every})],
            "missed": sum(1 for p in every if p["missed"])}


REPORT_EXAMPLES = 8


def examples(settings: Settings, job_id: int, count: int = REPORT_EXAMPLES) -> list[dict[str, Any]]:
    """A report's small gallery of one model: the points PGD-20 missed first, then the first broken ones."""
    index = read_index(settings, job_id)
    if index is None:
        return []
    points = index["points"]
    chosen = ([p for p in points if p["missed"]] + [p for p in points if not p["missed"]])[:count]
    return _items(settings, job_id, index, chosen)


def _items(settings: Settings, job_id: int, index: dict[str, Any],
           chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chosen index entries with class names and their three pictures (only their rows are read)."""
    if not chosen:
        return []
    names = index["class_names"]
    panels = np.load(folder(settings, job_id) / PANELS, mmap_mode="r")
    items = []
    for p in chosen:
        pixels = np.asarray(panels[p["row"]])
        items.append({**{k: v for k, v in p.items() if k != "row"},
                      "true_name": _name(names, p["true"]), "predicted_name": _name(names, p["predicted"]),
                      "images": {kind: G.data_uri(pixels[i])
                                 for i, kind in enumerate(("clean", "adversarial", "perturbation"))}})
    return items


def _name(names: list[str], k: int) -> str:
    return names[k] if 0 <= k < len(names) else f"class {k}"
