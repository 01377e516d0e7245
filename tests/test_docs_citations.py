"""Docs, docstrings and comments cite only files that exist in the repository.

A path such as ``robaudit/evaluation/results.py`` or ``docs/service.md`` written anywhere in the
tracked text must name a file or folder of this checkout, so a reader can follow it. Notes kept
outside the repository are never cited: their facts live in docs/references.md.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("robaudit", "models", "backend", "worker", "frontend", "launch", "docs", "tests", "benchmarks", "scripts")
# A repository-relative path: a top-level folder, then at least one more part.
PATH = re.compile(rf"(?<![\w./:-])((?:{'|'.join(TOP)})/[\w./*-]*[\w/*])")
TEXT = (".py", ".md", ".html", ".js", ".css", ".toml", ".yml", ".yaml", ".ini", ".cfg", "Makefile", "Dockerfile", "run")
SKIP = ("docs/study-mnist10k/",)   # generated report files, quoted verbatim


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines()
            if p.endswith(TEXT) and not p.startswith(SKIP) and not (ROOT / p).is_symlink()]


def _cited_paths(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if "http://" in line or "https://" in line or "github.com" in line:
            continue
        for match in PATH.finditer(line):
            found.append((number, match.group(1).rstrip("/.")))
    return found


def _exists(path: str) -> bool:
    if "*" in path or "<" in path:
        return True
    return (ROOT / path).exists()


def test_cited_paths_exist():
    missing = []
    for file in _tracked_text_files():
        if file == Path(__file__):
            continue
        for number, path in _cited_paths(file.read_text(errors="replace")):
            if not _exists(path):
                missing.append(f"{file.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "paths cited but not in the repository:\n" + "\n".join(missing)


def test_no_citation_of_notes_outside_the_repository():
    notes = re.compile(r"shared/research|_anchors\.md|feature_scatter\.md")
    offenders = [str(f.relative_to(ROOT)) for f in _tracked_text_files()
                 if f != Path(__file__) and notes.search(f.read_text())]
    assert not offenders, f"cite docs/references.md instead in: {offenders}"


def test_the_checker_sees_a_missing_path():
    assert _cited_paths("see robaudit/nowhere.py and docs/service.md.") == [(1, "robaudit/nowhere.py"),
                                                                            (1, "docs/service.md")]
    assert not _exists("robaudit/nowhere.py") and _exists("docs/service.md")
