"""The comparison report at a glance (issue 15), in headless Chromium: on a phone nothing scrolls
sideways and no legend covers its plot; on a desktop the report is short until the per-model details;
printed, its pages are readable and no chart is cut by a page break.

The report is the demo's three models (standard, PGD-AT, Feature Scattering) from real audit results
(docs/study-mnist10k/report.json), written with the service's crud functions into an app served
in-process (SQLite, no worker), so the module takes seconds.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontend"))
from frontend_fixtures import demo_payload, seed_report
from serve_process import serve_in_thread

pytestmark = pytest.mark.browser

TOKEN = "browser-glance-token-3e9b"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 900}
# "About three screens" at 1,400 px wide: three 900 px high laptop screens. Summary, the overstatement
# chart, the ε chart, steps and ladder side by side and the verdicts take about 2,630 px today.
THREE_SCREENS_PX = 3 * DESKTOP["height"]
# A4 at 96 CSS px per inch, less Chromium's default print margins (0.4 in each side).
A4_CONTENT_HEIGHT_PX = (11.69 - 0.8) * 96
A4_CONTENT_WIDTH_PX = (8.27 - 0.8) * 96


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from robaudit.backend.app.core.config import Settings
    from robaudit.backend.app.main import create_app

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("glance-data"), api_token=TOKEN), janitor=False)
    ids = seed_report(app, demo_payload())
    with serve_in_thread(app) as base:
        yield base, ids


def _open(browser, url: str, viewport: dict, charts: int):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function(f"document.querySelectorAll('div.plot[data-traces]').length >= {charts}")
    page.js_errors = errors
    return page


# Per drawn chart: its legend's box and its plot area's (Plotly's drag layer over the axes).
BOXES = """() => Array.from(document.querySelectorAll('div.plot[data-traces]')).map(p => {
  const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                      return {l: r.left, t: r.top, r: r.right, b: r.bottom}; };
  return {id: p.id, layout: p.getAttribute('data-layout'), legend: box(p.querySelector('g.legend')),
          plot: box(p.querySelector('.nsewdrag') || p.querySelector('.bglayer'))};
})"""


# Waits (up to 5 s, frame by frame) until the ε chart shows fewer traces than before. (wait_for_function
# polls through eval, which the pages' Content-Security-Policy forbids.)
WAIT_FEWER_VISIBLE = """async (before) => {
  const shown = () => document.getElementById('chart-eps').data.filter(t => t.visible === true).length;
  const end = performance.now() + 5000;
  while (shown() >= before && performance.now() < end) await new Promise(r => requestAnimationFrame(r));
  return shown() < before;
}"""


def _overlap(a: dict, b: dict) -> float:
    w = min(a["r"], b["r"]) - max(a["l"], b["l"])
    h = min(a["b"], b["b"]) - max(a["t"], b["t"])
    return max(0.0, w) * max(0.0, h)


@pytest.mark.parametrize("which", ["report", "share", "evaluation"])
def test_phone_pages_do_not_scroll_sideways_and_legends_sit_below_plots(site, browser, which):
    base, ids = site
    url = {"report": f"{base}/reports/{ids['report']}", "share": f"{base}/share/{ids['share']}",
           "evaluation": f"{base}/evaluations/{ids['evaluations'][2]}"}[which]
    page = _open(browser, url, PHONE, 3)
    try:
        widths = page.evaluate("({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
                               " view: window.innerWidth})")
        assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], widths
        charts = page.evaluate(BOXES)
        with_legend = [c for c in charts if c["legend"]]
        assert len(with_legend) >= 2, charts
        for c in with_legend:
            assert c["layout"] == "narrow", c
            assert _overlap(c["legend"], c["plot"]) == 0, f"{c['id']}: legend over the plot {c}"
            assert c["legend"]["t"] >= c["plot"]["b"], f"{c['id']}: legend not below the plot {c}"
        if which != "evaluation":
            # The summary table stacks: every cell inside the viewport, none cut at the right.
            right = page.evaluate("Math.max(...Array.from(document.querySelectorAll('table.comparison td'))"
                                  ".map(td => td.getBoundingClientRect().right))")
            assert right <= PHONE["width"]
        assert not page.js_errors
    finally:
        page.close()


def test_desktop_report_is_three_screens_until_the_details(site, browser):
    base, ids = site
    page = _open(browser, f"{base}/reports/{ids['report']}", DESKTOP, 4)
    try:
        state = page.evaluate("""() => {
          const d = Array.from(document.querySelectorAll('details.model-details'));
          return {top: d[0].getBoundingClientRect().top + window.scrollY, open: d.filter(x => x.open).length,
                  count: d.length, order: Array.from(document.querySelectorAll('figure.chart')).map(f => f.id),
                  verdicts: document.querySelectorAll('.verdict-list > li').length};
        }""")
        assert state["count"] == 3 and state["open"] == 0           # collapsed by default
        assert state["verdicts"] == 3                               # each verdict (and its reasons) above them
        assert state["order"][:2] == ["chart-gap-figure", "chart-eps-figure"]
        assert state["top"] <= THREE_SCREENS_PX, state
        # Every chart has a legend clear of its plot area at this width too.
        for c in page.evaluate(BOXES):
            if c["legend"]:
                assert _overlap(c["legend"], c["plot"]) == 0, c
        # One click on a model's legend group title hides all its traces in the ε chart.
        eps = page.locator("#chart-eps")
        before = page.evaluate("document.getElementById('chart-eps').data.filter(t => t.visible === true).length")
        eps.locator("g.legend g.groups").first.locator("g.traces").first.click()
        assert page.evaluate(WAIT_FEWER_VISIBLE, before)
        hidden = page.evaluate("""() => { const d = document.getElementById('chart-eps').data;
          const g = d[0].legendgroup; return d.filter(t => t.legendgroup === g).every(t => t.visible !== true) &&
          d.filter(t => t.legendgroup !== g).some(t => t.visible === true); }""")
        assert hidden
        assert not page.js_errors
    finally:
        page.close()


def test_print_opens_the_details_and_cuts_no_chart(site, browser):
    base, ids = site
    page = _open(browser, f"{base}/share/{ids['share']}", DESKTOP, 4)
    try:
        pdf = page.pdf(format="A4", print_background=True)   # fires beforeprint: details open, charts re-laid out
        pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
        # What the pages hold, laid out as for print: every details open, every chart short enough for
        # a page and marked not to be split, so Chromium moves it whole to the next page.
        page.set_viewport_size({"width": int(A4_CONTENT_WIDTH_PX), "height": int(A4_CONTENT_HEIGHT_PX)})
        page.emulate_media(media="print")
        page.evaluate("window.robauditCharts.beforePrint()")
        laid = page.evaluate("""() => ({
          height: document.documentElement.scrollHeight,
          closed: Array.from(document.querySelectorAll('details')).filter(d => !d.open).length,
          charts: Array.from(document.querySelectorAll('figure.chart')).map(f => {
            const r = f.getBoundingClientRect(), svg = f.querySelector('.main-svg');
            return {id: f.id, h: r.height, w: Math.max(r.width, svg ? svg.getBoundingClientRect().width : 0),
                    brk: getComputedStyle(f).breakInside, drawn: !!svg}; })
        })""")
        assert laid["closed"] == 0
        assert len(laid["charts"]) >= 7              # 4 comparison charts and 3 training charts
        for c in laid["charts"]:
            assert c["drawn"], c
            assert c["brk"] == "avoid", c
            assert c["h"] <= A4_CONTENT_HEIGHT_PX and c["w"] <= A4_CONTENT_WIDTH_PX + 1, c
        # Readable pages: about as many as the content needs (charts moved whole add a little).
        least = int(laid["height"] // A4_CONTENT_HEIGHT_PX)
        assert least <= pages <= 2 * least + 2, (pages, laid["height"])
        assert not page.js_errors
    finally:
        page.close()
