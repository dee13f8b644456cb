"""Take the README's screenshot of the live dashboard (docs/dashboard.png).

    make run   # in another shell; give it a few minutes so windows close
    PYTHONPATH=. .venv/bin/python scripts/screenshot_dashboard.py http://127.0.0.1:6066/ docs/dashboard.png

The page (full length, --width wide) stays open until its chart shows --closed closed windows for every event type and
its throughput chart --samples polls (one per 2 s), so the picture has history in it.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from playwright.sync_api import sync_playwright

READY = """([closed, samples]) => { const s = window.dashboardState;
  return !!s && s.rate.length >= samples && s.chart.series.length > 0
    && s.chart.series.every((x) => x.closed.length >= closed); }"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("output")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--closed", type=int, default=5, help="closed windows per event type to wait for")
    parser.add_argument("--samples", type=int, default=60, help="throughput samples to wait for")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for that data")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(args.url)
            page.wait_for_function(READY, arg=[args.closed, args.samples], timeout=args.timeout * 1000)
            page.screenshot(path=args.output, full_page=True)  # the viewport sets the width
        finally:
            browser.close()
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
