"""Screenshots of the demo's comparison report, on a desktop and on a phone, for docs/screenshots/.

Run after changing how reports look, and commit the PNGs so the change is seen in review:

    PYTHONPATH=. python scripts/screenshots.py [--out docs/screenshots]

The report is the demo's three models (standard, PGD-AT, Feature Scattering) from the real results
in docs/study-mnist10k/report.json, served by the app in-process (SQLite in a temp folder, no
worker); headless Chromium (/usr/bin/chromium) takes the pictures. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "screenshots-token-0b1e"

# (file, viewport width, viewport height, what): the top of the report, as each device opens it.
SHOTS = (
    ("report-desktop.png", 1400, 900, "report"),
    ("report-desktop-charts.png", 1400, 900, "charts"),
    ("report-phone.png", 390, 844, "report"),
    ("report-phone-charts.png", 390, 844, "charts"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "frontend"))
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from frontend_fixtures import demo_payload, seed_report, serving
    from playwright.sync_api import sync_playwright

    from robaudit.backend.app.core.config import Settings
    from robaudit.backend.app.main import create_app

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data), api_token=TOKEN), janitor=False)
        ids = seed_report(app, demo_payload())
        with serving(app) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, width, height, what in SHOTS:
                page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
                page.goto(f"{base}/share/{ids['share']}")
                page.wait_for_function("document.querySelectorAll('div.plot[data-traces]').length >= 3")
                if what == "charts":
                    page.locator("#chart-eps-figure").scroll_into_view_if_needed()
                    page.evaluate("window.scrollBy(0, -8)")
                page.screenshot(path=str(args.out / name))
                page.close()
                print(f"wrote {args.out / name}")
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
