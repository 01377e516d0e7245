"""Reports a CI job shows: JUnit XML (test panels) and a short Markdown summary (a pull-request comment).

Both are built from the results JSON and the gate's outcome. The JUnit report fails exactly when the
gate fails: one testcase per gate condition, and one per diagnostic check, which is a failure only
when the gate's ``fail_on`` counts its status (its status and message are in its output either way).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robaudit.evaluation.gate import GateResult, failing_checks, primary_eps, primary_worst_case
from robaudit.evaluation.results import find_row, same_eps
from robaudit.norms import label as norm_label


def _run_name(results: Mapping[str, Any]) -> str:
    checkpoint = results.get("checkpoint") or {}
    model = Path(checkpoint["path"]).name if checkpoint.get("path") else "model"
    return f"{model} on {results.get('dataset', '?')}"


def junit_xml(results: Mapping[str, Any], gate: GateResult) -> str:
    """The JUnit XML text: <testsuites> with a "gate" and a "diagnostics" <testsuite>."""
    seconds = f"{float((results.get('timing') or {}).get('total_seconds') or 0.0):.3f}"
    root = ET.Element("testsuites", name=f"robaudit: {_run_name(results)}")

    suite = ET.SubElement(root, "testsuite", name="robaudit.gate", time=seconds)
    for condition in gate.conditions:
        case = ET.SubElement(suite, "testcase", classname="robaudit.gate", name=condition.name, time="0")
        if condition.passed:
            ET.SubElement(case, "system-out").text = condition.message
        else:
            ET.SubElement(case, "failure", message=condition.message, type="gate").text = condition.message

    diag_suite = ET.SubElement(root, "testsuite", name="robaudit.diagnostics", time="0")
    counted = failing_checks(results, gate.settings.fail_on)
    for check in (results.get("diagnostics") or {}).get("checks") or []:
        case = ET.SubElement(diag_suite, "testcase", classname="robaudit.diagnostics",
                             name=f"{check['id']} {check['name']}", time="0")
        text = f"[{str(check['status']).upper()}] {check.get('message', '')}"
        if check["id"] in counted:
            ET.SubElement(case, "failure", message=text, type=f"fail-on-{gate.settings.fail_on}").text = text
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=text)
        else:
            ET.SubElement(case, "system-out").text = text

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in (suite, diag_suite):
        cases = s.findall("testcase")
        counts = {"tests": len(cases), "failures": sum(c.find("failure") is not None for c in cases),
                  "errors": 0, "skipped": sum(c.find("skipped") is not None for c in cases)}
        for key, value in counts.items():
            s.set(key, str(value))
            totals[key] += value
    for key in ("tests", "failures", "errors"):
        root.set(key, str(totals[key]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _pct(row: Mapping[str, Any] | None, n_all: Any) -> str:
    if row is None:
        return "not run"
    text = f"{100 * float(row['robust_accuracy']):.2f} %"
    return text if row.get("n") == n_all else f"{text} (first {row['n']} points)"


def summary_markdown(results: Mapping[str, Any], gate: GateResult) -> str:
    """A few lines for a CI comment: gate outcome and reasons, headline accuracies, failing checks."""
    eps = primary_eps(results)
    n = results.get("n")
    diagnostics = results.get("diagnostics") or {}
    status = "passed" if gate.passed else "FAILED"
    lines = [f"### robaudit gate {status}: {_run_name(results)}", ""]
    if not gate.conditions:
        lines.append("No gate condition was set (`--fail-under`, `--fail-on`).")
    for condition in gate.conditions:
        lines.append(f"- {'✅' if condition.passed else '❌'} `{condition.name}`: {condition.message}")
    lines += ["", f"Verdict: **{diagnostics.get('verdict', 'no diagnostics')}**", ""]
    lines += [f"> **Warning:** {warning}" for warning in results.get("warnings") or []]
    if results.get("warnings"):
        lines.append("")
    eps_text = f"{eps:.6g}" if eps is not None else "?"
    norm = results.get("norm") or (results.get("config") or {}).get("norm") or "linf"
    where = "eps" if norm == "linf" else f"{norm_label(norm)} eps"   # L-inf tables read as before
    lines += [f"| {n} points, {where} = {eps_text} | accuracy |", "|---|---|",
              f"| clean | {100 * float(results.get('clean_accuracy') or 0.0):.2f} % |"]
    if eps is not None:
        lines.append(f"| PGD-20 | {_pct(find_row(results, 'pgd', eps, steps=20), n)} |")
        lines.append(f"| AutoAttack | {_pct(find_row(results, 'autoattack', eps), n)} |")
    lines.append(f"| worst case | {_pct(primary_worst_case(results), n)} |")
    # Attacks run on the first m points only (AutoAttack in the audit preset) have their own worst case;
    # shown for the reader, not gated (the gate reads the all-points row).
    for row in results.get("worst_case") or []:
        if eps is not None and same_eps(float(row["eps"]), eps) and row.get("n") != n:
            lines.append(f"| worst case, first {row['n']} points (not gated) | "
                         f"{100 * float(row['robust_accuracy']):.2f} % |")
    flagged = [c for c in diagnostics.get("checks") or [] if c.get("status") in ("warn", "fail")]
    if flagged:
        lines += ["", "Checks at warn or fail:", ""]
        lines += [f"- **{c['id']} {c['name']}** [{c['status']}]: {c.get('message', '')}" for c in flagged]
    return "\n".join(lines) + "\n"
