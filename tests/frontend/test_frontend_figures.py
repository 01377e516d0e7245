"""Figure builders: what each chart shows, its units and encodings, and robustness to missing data."""
from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import pytest
from frontend_fixtures import payload  # noqa: F401 (fixture)

from robaudit.evaluation.registry import ATTACKS
from robaudit.frontend import figures as F
from robaudit.frontend import results_view as R
from robaudit.frontend.views import evaluation_views


def models_of(payload: dict) -> list[R.Model]:
    return [v.model for v in evaluation_views(payload["evaluations"])]


def assert_valid(fig: dict) -> None:
    """Plotly accepts every property, and the figure is strict JSON (no NaN)."""
    go.Figure({k: v for k, v in fig.items() if k in ("data", "layout")})
    json.dumps(fig, allow_nan=False)


def trace(fig: dict, name: str) -> dict:
    found = [t for t in fig["data"] if t.get("name") == name]
    assert found, f"no trace {name!r} in {[t.get('name') for t in fig['data']]}"
    return found[0]


@pytest.mark.parametrize("name,family", [
    ("fgsm", "fgsm"), ("rs-fgsm", "rs-fgsm"), ("pgd", "pgd"), ("cw", "cw"), ("apgd-ce", "apgd-ce"),
    ("apgd-t", "apgd-dlr"), ("fab-t", "fab"), ("square", "square"), ("autoattack", "autoattack"),
    ("autoattack:apgd-ce", "aa-stage"), ("transfer", "transfer"), ("noise", "noise"),
])
def test_attack_names_of_the_engine_map_to_families(name, family):
    assert R.rung_of({"attack": name}).family == family


def test_rung_labels_and_ladder_order_are_the_registry_s():
    rungs = [R.rung_of({"attack": name}) for name in ATTACKS]
    assert [g.label for g in rungs] == [a.label for a in ATTACKS.values()]
    ladder_order = [g.raw for g in sorted(rungs, key=lambda g: g.order)]
    assert ladder_order == sorted(ATTACKS, key=lambda name: ATTACKS[name].order)
    assert R.rung_of({"attack": "autoattack:apgd-t"}).label == "AutoAttack after APGD-T"
    assert R.rung_of({"attack": "cw", "steps": 100, "restarts": 5}).label == "CW-100×5"


def test_eps_is_shown_as_x_over_255_only_when_it_is_one():
    assert R.eps_short(8 / 255) == "8/255"
    assert R.eps_text(8 / 255) == "8/255 (0.03137)"
    assert R.eps_short(0.3) == "0.3"
    assert R.eps_short(0.2) == "0.2"           # also 51/255, but the short decimal reads better
    assert R.eps_short(None) == "–"


def test_eps_chart_has_one_line_per_attack_starting_at_clean_accuracy(payload):
    fs = models_of(payload)[:1]
    fig = F.accuracy_vs_eps(fs)
    assert_valid(fig)
    names = [t["name"] for t in fig["data"]]
    assert names == ["RS-FGSM", "PGD-20", "PGD-100", "CW-100", "AutoAttack", "worst case"]
    pgd20 = trace(fig, "PGD-20")
    assert pgd20["x"] == [0.0, 0.1, 0.2, 0.3]
    assert pgd20["y"] == [98.2, 93.0, 84.0, 71.0]          # percent, clean accuracy first
    assert pgd20["mode"] == "lines+markers"
    # AutoAttack ran at one ε only: a marker, no line drawn from the clean point.
    aa = trace(fig, "AutoAttack")
    assert aa["mode"] == "markers" and aa["x"] == [0.3] and aa["y"] == [38.5]
    assert trace(fig, "worst case")["line"]["color"] == F.MODEL_COLORS[0]      # one colour: the model's
    assert [t["visible"] for t in fig["data"]] == ["legendonly", True, "legendonly", "legendonly", "legendonly", True]
    assert fig["layout"]["xaxis"]["title"]["text"] == "ε (L∞, pixel scale [0, 1])"
    assert fig["layout"]["yaxis"]["title"]["text"] == "robust accuracy (%)"
    assert "robust accuracy = %{y:.2f}%" in pgd20["hovertemplate"]


def test_eps_chart_gives_each_model_a_colour_and_each_attack_a_marker_and_dash(payload):
    fig = F.accuracy_vs_eps(models_of(payload))
    assert_valid(fig)
    a, b = (t for t in fig["data"] if t["name"] == "PGD-20")
    assert (a["legendgroup"], b["legendgroup"]) == ("fs-mnist-d0.5", "pgd-at-mnist")
    assert a["line"]["color"] != b["line"]["color"]                   # colour = model
    assert a["marker"]["symbol"] == b["marker"]["symbol"]             # symbol and dash = attack
    assert a["line"]["dash"] == b["line"]["dash"]
    aa = trace(fig, "AutoAttack")
    assert aa["marker"]["symbol"] != a["marker"]["symbol"]
    assert fig["layout"]["legend"]["groupclick"] == "toggleitem"      # an attack is one click away


def test_cumulative_autoattack_stages_stay_out_of_the_charts(payload):
    fig = F.accuracy_vs_eps(models_of(payload)[:1])
    assert not any("after" in t["name"] for t in fig["data"])
    ladder = F.attack_ladder(models_of(payload)[:1])
    assert not any("after" in t["name"] for t in ladder["data"])


def test_steps_chart_is_log_scale_and_flags_a_curve_still_falling(payload):
    fs, pgd_at = models_of(payload)
    fig = F.accuracy_vs_steps([fs])
    assert_valid(fig)
    assert fig["layout"]["xaxis"]["type"] == "log"
    pgd = trace(fig, "PGD @ ε = 0.3")
    assert pgd["x"] == [1, 2, 5, 10, 20, 50, 100]
    assert pgd["y"][-1] == 52.0
    (note,) = fig["layout"]["annotations"]
    assert "still falling" in note["text"] and "50 to 100 steps" in note["text"]
    assert math.isclose(note["x"], 2.0)                          # log10(100): the last point
    assert fig["warnings"] == 1


def test_steps_chart_from_summary_rows_without_a_falling_curve_has_no_warning(payload):
    _, pgd_at = models_of(payload)
    fig = F.accuracy_vs_steps([pgd_at])      # PGD-20 62.0 % vs PGD-100 61.5 %: one point of 200 is noise
    assert_valid(fig)
    assert trace(fig, "PGD @ ε = 0.3")["x"] == [20, 100]
    assert "annotations" not in fig["layout"]
    assert fig["warnings"] == 0


@pytest.mark.parametrize("acc,n,expected", [
    ([0.71, 0.52], 200, 19.0),      # 19 pp: flagged
    ([0.62, 0.615], 200, None),     # one test point: noise
    ([0.62, 0.60], 200, 2.0),       # four points, 2 pp
    ([0.50, 0.49], None, 1.0),      # no n: the 0.5 pp floor
    ([0.50, 0.52], 200, None),      # rising: not a warning
])
def test_still_falling_threshold(acc, n, expected):
    got = R.still_falling([20, 100], acc, n)
    assert (got is None) if expected is None else math.isclose(got, expected)


def test_ladder_has_the_canonical_rungs_per_model_and_marks_missing_ones(payload):
    fig = F.attack_ladder(models_of(payload))
    assert_valid(fig)
    assert fig["layout"]["barmode"] == "group"
    fs, pgd_at = fig["data"]                                           # one bar trace per model, its colour
    assert fs["x"] == ["clean", "RS-FGSM", "PGD-20", "PGD-100", "CW-100", "AutoAttack", "worst case"]
    assert fs["marker"]["color"] == F.MODEL_COLORS[0] and pgd_at["marker"]["color"] == F.MODEL_COLORS[1]
    assert fs["marker"]["pattern"]["shape"][fs["x"].index("CW-100")] == "x"     # hatching names the attack
    assert fs["texttemplate" if "texttemplate" in fs else "text"][5] == "38.5"  # numbers on the bars
    assert pgd_at["y"][5] is None and "not run" in pgd_at["hovertext"][5]       # PGD-AT ran no AutoAttack
    assert fs["y"][-1] == 38.5 and pgd_at["y"][-1] == 60.0
    assert fs["name"].startswith("fs-mnist-d0.5")


def test_ladder_shows_the_largest_step_count_when_the_canonical_ones_are_missing():
    results = {"clean_accuracy": 0.9, "config": {"eps": [0.3]},
               "summary": [{"attack": "pgd", "eps": 0.3, "steps": 10, "restarts": 1, "robust_accuracy": 0.5},
                           {"attack": "pgd", "eps": 0.3, "steps": 7, "restarts": 1, "robust_accuracy": 0.55}]}
    rungs = [g.label for g, _ in R.ladder(results)]
    assert rungs == ["clean", "PGD-10"]


def test_headline_eps_is_the_primary_eps_of_the_evaluation():
    rows = [{"attack": "pgd", "eps": e, "steps": 20, "robust_accuracy": 0.5} for e in (0.1, 0.2, 0.3)]
    assert R.headline_eps({"summary": rows, "config": {"eps": [0.2, 0.1]}}) == 0.2
    assert R.headline_eps({"summary": rows}) == 0.3            # no config: most attacks, then larger ε
    assert R.headline_eps({"summary": []}) is None


def test_training_curves_mark_the_learning_rate_drop(payload):
    fs = models_of(payload)[0]
    fig = F.training_curves(fs)
    assert_valid(fig)
    clean = trace(fig, "clean test accuracy")
    assert clean["x"] == [1, 2, 3, 4] and clean["y"] == [90.0, 95.0, 97.0, 98.0]
    assert trace(fig, "PGD-20 test accuracy")["y"] == [50.0, 62.0, 70.0, 71.0]
    (line,) = fig["layout"]["shapes"]
    assert line["x0"] == line["x1"] == 2.5                     # lr 0.01 for epochs 1-2, 0.001 from 3
    assert "0.01 → 0.001" in fig["layout"]["annotations"][0]["text"]


def test_training_curves_need_a_history(payload):
    assert F.training_curves(models_of(payload)[1]) is None    # uploaded without history
    assert F.training_curves(R.Model("x", checkpoint=None)) is None


def test_training_history_is_found_in_checkpoint_metadata_too():
    ck = {"metadata": {"metrics": {"history": [{"epoch": 1, "clean_acc": 0.5, "lr": 0.1},
                                                {"epoch": 2, "clean_acc": 0.6, "lr": 0.1}]}}}
    fig = F.training_curves(R.Model("m", checkpoint=ck))
    assert trace(fig, "clean test accuracy")["y"] == [50.0, 60.0]
    assert fig["layout"]["shapes"] == []


def test_label_smoothing_view_puts_pgd_and_autoattack_against_delta(payload):
    fig = F.label_smoothing_view(models_of(payload))
    assert_valid(fig)
    fs_pgd = trace(fig, "PGD-20 · feature-scatter")
    assert fs_pgd["x"] == [0.5] and fs_pgd["y"] == [71.0]
    assert trace(fig, "AutoAttack · feature-scatter")["y"] == [38.5]
    assert trace(fig, "PGD-20 · pgd-at")["x"] == [0.0]
    assert "label smoothing δ" in fig["layout"]["xaxis"]["title"]["text"]


def test_label_smoothing_view_joins_several_deltas_of_one_method(payload):
    evs = payload["evaluations"]
    second = json.loads(json.dumps(evs[0]))
    second["id"], second["checkpoint"]["id"], second["checkpoint"]["name"] = 9, 30, "fs-mnist-d0.2"
    second["checkpoint"]["hyperparameters"]["label_smoothing"] = 0.2
    fig = F.label_smoothing_view([v.model for v in evaluation_views([evs[0], second])])
    fs = trace(fig, "under PGD-20")
    assert fs["x"] == [0.2, 0.5] and fs["mode"] == "lines+markers"


def test_label_smoothing_view_counts_a_twice_evaluated_checkpoint_once(payload):
    fs = payload["evaluations"][0]
    paper = json.loads(json.dumps(fs))                 # same checkpoint, evaluated without AutoAttack
    paper["id"] = 10
    paper["results"]["summary"] = [r for r in paper["results"]["summary"] if not r["attack"].startswith("autoattack")]
    for r in paper["results"]["summary"]:
        r["robust_accuracy"] = 0.99                    # would show if this evaluation were picked
    fig = F.label_smoothing_view([v.model for v in evaluation_views([paper, fs])])
    assert trace(fig, "under PGD-20")["y"] == [71.0]
    assert trace(fig, "under AutoAttack")["y"] == [38.5]


def test_label_smoothing_view_draws_the_published_reference(payload):
    reference = {"source": "Zhang & Wang 2019", "rows": [{"delta": 0.0, "robust_accuracy": 43.03},
                                                          {"delta": 0.5, "robust_accuracy": 72.03}]}
    fig = F.label_smoothing_view(models_of(payload), reference)
    ref = trace(fig, "published (seed paper)")
    assert ref["x"] == [0.0, 0.5] and ref["y"] == [43.03, 72.03]
    assert ref["line"]["dash"] == "dot"


def test_nothing_to_draw_gives_none():
    empty = [R.Model("m", results={"summary": []})]
    assert F.accuracy_vs_eps(empty) is None
    assert F.accuracy_vs_steps(empty) is None
    assert F.attack_ladder([R.Model("m", results=None)]) is None
    assert F.label_smoothing_view(empty) is None


def test_user_text_in_hover_labels_is_escaped(payload):
    payload["evaluations"][0]["checkpoint"]["name"] = "<img src=x onerror=alert(1)>"
    fig = F.accuracy_vs_eps(models_of(payload)[:1])
    assert "<img" not in json.dumps(fig)
    assert "&lt;img" in fig["data"][0]["text"][1]
