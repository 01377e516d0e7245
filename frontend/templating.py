"""The Jinja2 environment shared by the pages and the exported report, with its filters."""
from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from robaudit.frontend import results_view as R

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the installed plotly package (served and inlined; never a CDN)."""
    path = Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the installed plotly package ({path})")
    return path


@lru_cache(maxsize=1)
def plotly_style_hashes() -> tuple[str, ...]:
    """CSP sources for the <style> elements plotly.js writes with CSS text when it loads (maplibre's
    CSS, in plotly.js 3-4): the sha256 of each text, read from the installed bundle so that they
    follow plotly upgrades. (Its other style elements start empty and are filled through the CSSOM.)"""
    js = plotly_js_path().read_text(encoding="utf-8")
    texts = re.findall(r'createElement\("style"\);\w+\.id="[0-9a-f]+",\w+\.textContent=\'([^\'\\]*)\'', js)
    return tuple(f"'sha256-{base64.b64encode(hashlib.sha256(t.encode()).digest()).decode()}'" for t in texts)


def script_json(value: Any) -> Markup:
    """JSON safe inside <script type="application/json">: no '</script>', no HTML comment openers."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def pct(v: Any, digits: int = 1) -> str:
    p = R.percent(v)
    return "–" if p is None else f"{p:.{digits}f} %"


def ci(v: Any) -> str:
    """A ``ci95`` pair as "38.5–57.7 %" (– for results written before intervals existed)."""
    if not isinstance(v, list | tuple) or len(v) != 2:
        return "–"
    low, high = R.percent(v[0]), R.percent(v[1])
    return "–" if low is None or high is None else f"{low:.1f}–{high:.1f} %"


def fmt_dt(v: Any) -> str:
    if v in (None, ""):
        return "–"
    try:
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00")) if not isinstance(v, datetime) else v
    except ValueError:
        return str(v)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt.tzinfo else dt.strftime("%Y-%m-%d %H:%M")


def fmt_num(v: Any, digits: int = 4) -> str:
    f = R.to_float(v)
    if f is None:
        return "–" if v in (None, "") else str(v)
    if f == int(f) and abs(f) < 1e9:
        return str(int(f))
    return f"{f:.{digits}g}"


def fmt_bytes(v: Any) -> str:
    f = R.to_float(v)
    if f is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if f < 1024 or unit == "GB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{f:.1f} GB"


@lru_cache(maxsize=1)
def attack_label(name: Any) -> str:
    """How pages name a results row's attack (the registry's label, else the name itself)."""
    from robaudit.evaluation.registry import ATTACKS

    info = ATTACKS.get(str(name))
    return info.label if info is not None else str(name)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({
        "script_json": script_json,
        "pct": pct,
        "ci": ci,
        "eps": R.eps_text,              # {{ eps | eps(norm) }}: k/255 only under L-inf
        "eps_short": R.eps_short,
        "norm": R.norm_label,
        "dt": fmt_dt,
        "num": fmt_num,
        "bytes": fmt_bytes,
        "attack_label": attack_label,
    })
    return env
