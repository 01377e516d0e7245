"""The CI gate on hand-made results, and its JUnit and Markdown reports."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest

from robaudit.errors import RobauditError
from robaudit.evaluation.ci_report import junit_xml, summary_markdown
from robaudit.evaluation.diagnostics import VERDICT_CLEAN, VERDICT_MASKING
from robaudit.evaluation.gate import GateSettings, check_gate, parse_fail_under


def _check(cid: str, status: str) -> dict:
    return {"id": cid, "name": f"check {cid}", "status": status, "evidence": {}, "message": f"{cid} is {status}"}


def results(worst: float = 0.4, statuses: tuple[str, ...] = ("pass", "pass", "skipped")) -> dict:
    """Ten points at eps 0.3 (primary) and 0.1; AutoAttack on the first 4 only, as the audit preset does."""
    checks = [_check(f"C{i + 1}", s) for i, s in enumerate(statuses)]
    return {
        "dataset": "mnist10k", "n": 10, "clean_accuracy": 0.9, "config": {"eps": [0.3, 0.1]},
        "summary": [
            {"attack": "pgd", "eps": 0.3, "steps": 20, "restarts": 1, "robust_accuracy": 0.7, "n": 10},
            {"attack": "autoattack", "eps": 0.3, "steps": None, "restarts": 1, "robust_accuracy": 0.25, "n": 4},
        ],
        "worst_case": [
            {"eps": 0.3, "key": "worst-case@eps=0.3", "n": 10, "robust_accuracy": worst},
            {"eps": 0.3, "key": "worst-case@eps=0.3/first=4", "n": 4, "robust_accuracy": 0.0},
            {"eps": 0.1, "key": "worst-case@eps=0.1", "n": 10, "robust_accuracy": 0.0},
        ],
        "diagnostics": {"verdict": VERDICT_MASKING if "fail" in statuses else VERDICT_CLEAN, "checks": checks},
        "timing": {"total_seconds": 1.5},
    }


def test_fail_under_gates_on_the_all_points_worst_case_at_the_primary_eps():
    # The eps=0.1 row and the first-4 subset row are both 0.0; only the primary, all-points row counts.
    assert check_gate(results(0.4), GateSettings(fail_under=0.4)).passed          # equal passes
    assert check_gate(results(0.5), GateSettings(fail_under=0.4)).passed
    failed = check_gate(results(0.3), GateSettings(fail_under=0.4))
    assert not failed.passed
    assert failed.reasons == ["worst case 30.00 % at eps=0.3 on 10 points is below the threshold 40.00 %"]


def test_a_percentage_threshold_at_the_edge_passes_like_the_fraction():
    assert check_gate(results(0.3), GateSettings(fail_under=parse_fail_under("30%"))).passed
    assert not check_gate(results(0.2), GateSettings(fail_under=parse_fail_under("30%"))).passed


def test_missing_worst_case_fails_with_a_clear_reason():
    r = results()
    r["worst_case"] = [row for row in r["worst_case"] if row["key"] != "worst-case@eps=0.3"]
    gate = check_gate(r, GateSettings(fail_under=0.1))
    assert not gate.passed
    assert gate.reasons == ["no worst case over all points at eps=0.3 in the results, so --fail-under 0.1 "
                            "cannot be checked"]
    del r["config"]
    assert "(the results record no eps)" in check_gate(r, GateSettings(fail_under=0.1)).reasons[0]


def test_fail_on_suspected_and_warn():
    healthy, warned, failed = results(), results(statuses=("pass", "warn", "skipped")), \
        results(statuses=("fail", "warn", "pass"))
    suspected, strict = GateSettings(fail_on="suspected"), GateSettings(fail_on="warn")
    assert check_gate(healthy, suspected).passed and check_gate(healthy, strict).passed
    assert check_gate(warned, suspected).passed
    assert check_gate(warned, strict).reasons == [
        f"verdict: {VERDICT_CLEAN}; --fail-on warn: C2 check C2 [warn]"]
    assert check_gate(failed, suspected).reasons == [
        f"verdict: {VERDICT_MASKING}; --fail-on suspected: C1 check C1 [fail]"]
    assert not check_gate(failed, strict).passed
    no_diagnostics = results()
    del no_diagnostics["diagnostics"]
    assert check_gate(no_diagnostics, suspected).reasons == [
        "the results have no diagnostics, so --fail-on suspected cannot be checked"]


def test_both_conditions_report_each_failure_and_no_condition_passes():
    gate = check_gate(results(0.1, ("fail",)), GateSettings(fail_under=0.5, fail_on="suspected"))
    assert [c.name for c in gate.conditions] == ["fail-under", "fail-on-suspected"]
    assert len(gate.reasons) == 2
    assert gate.to_dict()["passed"] is False and gate.to_dict()["fail_under"] == 0.5
    assert check_gate(results(0.0, ("fail",)), GateSettings()).passed


@pytest.mark.parametrize(("text", "value"), [("0.4", 0.4), ("40%", 0.4), ("0", 0.0), ("1", 1.0), ("100%", 1.0),
                                             (" 12.5% ", 0.125)])
def test_parse_fail_under(text, value):
    assert parse_fail_under(text) == pytest.approx(value)


@pytest.mark.parametrize(("text", "message"), [("40", "did you mean 40%?"), ("abc", "such as 0.4 or 40%"),
                                               ("-0.1", "between 0 and 1"), ("120%", "between 0 and 1"),
                                               ("nan", "between 0 and 1")])
def test_parse_fail_under_refuses_ambiguous_or_bad_values(text, message):
    with pytest.raises(RobauditError, match=message):
        parse_fail_under(text)


def test_settings_refuse_bad_values():
    with pytest.raises(RobauditError):
        GateSettings(fail_under=1.5)
    with pytest.raises(RobauditError):
        GateSettings(fail_on="sometimes")  # type: ignore[arg-type]


def test_junit_report_fails_exactly_when_the_gate_fails():
    r = results(0.3, ("fail", "warn", "skipped"))
    gate = check_gate(r, GateSettings(fail_under=0.4, fail_on="suspected"))
    root = ET.fromstring(junit_xml(r, gate))
    # Failures: both conditions and C1.
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "3"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"robaudit.gate", "robaudit.diagnostics"}
    gate_cases = suites["robaudit.gate"].findall("testcase")
    assert [c.get("name") for c in gate_cases] == ["fail-under", "fail-on-suspected"]
    assert all(c.find("failure") is not None for c in gate_cases)
    assert "below the threshold 40.00 %" in gate_cases[0].find("failure").get("message")
    diag = {c.get("name"): c for c in suites["robaudit.diagnostics"].findall("testcase")}
    assert diag["C1 check C1"].find("failure") is not None        # counted by --fail-on suspected
    assert diag["C2 check C2"].find("failure") is None            # a warning is not, at this level
    assert "[WARN]" in diag["C2 check C2"].find("system-out").text
    assert diag["C3 check C3"].find("skipped") is not None
    assert suites["robaudit.diagnostics"].get("failures") == "1"
    assert suites["robaudit.diagnostics"].get("skipped") == "1"
    for case in root.iter("testcase"):
        assert case.get("classname") and case.get("name") and case.get("time") is not None

    strict = check_gate(r, GateSettings(fail_on="warn"))
    root = ET.fromstring(junit_xml(r, strict))
    assert root.get("failures") == "3"     # the condition, C1 and C2

    healthy = results(0.5)
    root = ET.fromstring(junit_xml(healthy, check_gate(healthy, GateSettings(fail_under=0.4))))
    assert root.get("failures") == "0" and root.get("tests") == "4"


def test_markdown_summary_lists_gate_numbers_and_flagged_checks():
    r = results(0.3, ("fail", "warn", "pass"))
    r["checkpoint"] = {"path": "/ci/out/fs.safetensors"}
    text = summary_markdown(r, check_gate(r, GateSettings(fail_under=0.4, fail_on="suspected")))
    assert text.startswith("### robaudit gate FAILED: fs.safetensors on mnist10k")
    assert "❌ `fail-under`: worst case 30.00 % at eps=0.3" in text
    assert f"Verdict: **{VERDICT_MASKING}**" in text
    assert "| clean | 90.00 % |" in text and "| PGD-20 | 70.00 % |" in text
    assert "| AutoAttack | 25.00 % (first 4 points) |" in text
    assert "| worst case | 30.00 % |" in text
    assert "| worst case, first 4 points (not gated) | 0.00 % |" in text
    assert "- **C1 check C1** [fail]: C1 is fail" in text and "- **C2 check C2** [warn]" in text
    assert "C3" not in text

    passed = copy.deepcopy(results(0.5))
    del passed["summary"][1]
    text = summary_markdown(passed, check_gate(passed, GateSettings(fail_under=0.4)))
    assert "### robaudit gate passed: model on mnist10k" in text and "| AutoAttack | not run |" in text
    assert "Checks at warn or fail" not in text
