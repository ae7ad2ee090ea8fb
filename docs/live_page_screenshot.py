"""Draw docs/live_page.png: a finished job's live page as it looked mid-way, in headless Chromium.

    python docs/live_page_screenshot.py stylized.job [-o docs/live_page.png] [--share 0.6]

The job's first renders (``--share`` of them) are replayed into a temporary job directory as
if they had just finished, its page is written and served read-only (`ray-style status
--serve`'s server), and Debian's Chromium (``RAY_STYLE_CHROMIUM`` to use another) takes a
full-page screenshot through Playwright.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ray_style.job import Layout
from ray_style.store import read_records
from ray_style.page import LivePage
from ray_style.serve import make_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("RAY_STYLE_CHROMIUM", "/usr/bin/chromium")


def replay(source: Path, root: Path, share: float) -> LivePage:
    """A copy of the finished job in ``source`` as it stood when ``share`` of its renders were done."""
    source, target = Layout(source), Layout(root)
    records = read_records(source.frames_log)
    kept = records[:max(2, int(len(records) * share))]
    # As if the job were running now, with the warping error per frame the final evaluation measured.
    shift = time.time() - 5 - kept[-1]["time"]
    evaluation = source.report / "evaluation.json"
    warping = {row["frame"]: row["warping_error"] for row in json.loads(evaluation.read_text())["per_frame"]
               if "warping_error" in row} if evaluation.exists() else {}
    kept = [{**r, "time": r["time"] + shift, **({"warping_error": warping[r["frame"]]} if r["frame"] in warping
                                                 else {})} for r in kept]
    root.mkdir(parents=True)
    shutil.copy(source.manifest, target.manifest)
    shutil.copy(source.marker, target.marker)
    shutil.copytree(source.sources, target.sources)
    for record in kept:
        path = target.frame(record["chain"], record["frame"])
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.frame(record["chain"], record["frame"]), path)
    target.frames_log.write_text("".join(json.dumps(r) + "\n" for r in kept))
    page = LivePage(root, len(records))
    page.created = kept[0]["time"] - 1  # replayed renders count as this run's, for the rate
    return page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="a finished job directory")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "live_page.png")
    parser.add_argument("--share", type=float, default=0.6, help="share of the renders shown done (%(default)s)")
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as work:
        live = replay(args.job, Path(work) / "job", args.share)
        live.write("running")
        server = make_server(live.root, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                     args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                expect(page.locator("#state")).to_have_text("running")
                page.screenshot(path=str(args.output), full_page=True)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
