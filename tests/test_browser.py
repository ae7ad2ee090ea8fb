"""The live job page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Skipped, with the reason, where Playwright or Chromium is missing or Chromium cannot start
(`.ci/run` installs both and refuses that skip). docs/live_page_screenshot.py draws the README's
picture of the page with the same browser.
"""
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ray_style.images import load_image, resize, save_image
from ray_style.page import LivePage, thumbnail
from ray_style.serve import make_server

from tests.conftest import SAMPLES

sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install -e '.[test]'")
CHROMIUM = os.environ.get("RAY_STYLE_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)", allow_module_level=True)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 96, 64


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="ray-style-chromium-")
    manager = sync_api.sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                             headless=True, viewport={"width": 1000, "height": 900})
    except Exception as error:  # noqa: BLE001 (any launch failure means "no browser here")
        manager.stop()
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(error).splitlines()[0]}")
    yield context
    context.close()
    manager.stop()
    shutil.rmtree(profile, ignore_errors=True)


class Watched:
    """A page with its console errors, uncaught exceptions and dialogs recorded."""

    def __init__(self, context):
        self.page = context.new_page()
        self.errors, self.dialogs = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture()
def watched(browser):
    watched = Watched(browser)
    yield watched
    watched.page.close()


def _serve(job):
    server = make_server(job, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture()
def served():
    servers = []

    def start(job):
        server, url = _serve(job)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def source_frame(index: int, photo: np.ndarray) -> np.ndarray:
    """A camera panning across the cat."""
    return resize(photo[40:40 + 260, 10 * index:10 * index + 390], WIDTH, HEIGHT)


def stylized_frame(source: np.ndarray, painting: np.ndarray) -> np.ndarray:
    """Clearly not the source: posterized, colours rotated, the painting's texture over it."""
    texture = resize(painting, WIDTH, HEIGHT).astype(np.float32)
    mixed = 0.5 * (source[..., ::-1] // 64 * 64).astype(np.float32) + 0.5 * texture
    return np.clip(mixed, 0, 255).astype(np.uint8)


class GrowingJob:
    """A job directory laid out as a running job's, grown one finished render at a time."""

    def __init__(self, root: Path, renders: int, input_name: str = "samples/clip.mp4", styles=("starry.jpg",)):
        self.root, self.renders = root, renders
        self.photo, self.painting = load_image(SAMPLES / "chelsea.png"), load_image(SAMPLES / "starry_night.jpg")
        root.mkdir(parents=True)
        manifest = {"version": "t", "input": {"sha256": "0", "frames": renders, "fps": "25", "audio": "aac"},
                    "styles": ["0"], "weights": "random", "settings": {"style": {"size": WIDTH}},
                    "frame_size": [WIDTH, HEIGHT],
                    "run": {"input": input_name, "styles": list(styles), "output": "out.mp4"}}
        (root / "manifest.json").write_text(json.dumps(manifest))
        (root / ".ray-style-job").write_text("{}")
        (root / "source").mkdir()
        for index in range(renders):
            save_image(source_frame(index, self.photo), root / "source" / f"{index:06d}.png")
        self.page = LivePage(root, renders, refresh_s=1)
        self.started = time.time()

    def finish(self, frame: int, worker: str = "node-a:101", state: str = "running") -> None:
        path = self.root / "chains" / "0000" / f"{frame:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(stylized_frame(load_image(self.root / "source" / f"{frame:06d}.png"), self.painting), path)
        record = {"chain": 0, "frame": frame, "time": self.started + 2.0 * frame + 1, "loss": 5e5 - 1e4 * frame,
                  "content_loss": 2e5, "style_loss": 1e3, "evaluations": 20, "seconds": 2.0, "worker": worker,
                  "warping_error": 0.004 + 0.0005 * (frame % 3)}
        with open(self.root / "frames.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        self.page.write(state)

    def event(self, **event) -> None:
        with open(self.root / "events.jsonl", "a") as log:
            log.write(json.dumps({"time": time.time(), **event}) + "\n")


PIXELS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return {width: canvas.width, height: canvas.height,
            data: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
}"""


def browser_pixels(locator) -> np.ndarray:
    """The image as the browser decoded it, read back through a canvas: ``(H, W, 3)``."""
    assert locator.evaluate("img => img.complete && img.naturalWidth > 0")
    seen = locator.evaluate(PIXELS)
    return np.array(seen["data"], dtype=np.float32).reshape(seen["height"], seen["width"], 4)[..., :3]


@pytest.mark.slow  # waits for two meta refreshes
def test_running_then_finished_job_in_the_browser(tmp_path, watched, served):
    job = GrowingJob(tmp_path / "job", renders=8)
    for frame in range(3):
        job.finish(frame)
    page = watched.page
    page.goto(served(job.root))
    expect = sync_api.expect
    expect(page.locator("#done")).to_have_text("3")
    expect(page.locator("#total")).to_have_text("8")
    expect(page.locator("#eta")).to_have_text("10 s")  # 5 renders left at one per 2 s
    expect(page.locator("#state")).to_have_text("running")
    assert page.locator('meta[http-equiv="refresh"]').count() == 1

    # The newest thumbnail is frame 2's stylized render, pixel for pixel (up to JPEG).
    newest = page.locator("#latest figure").first
    assert newest.get_attribute("data-frame") == "2"
    seen = browser_pixels(newest.locator("img.stylized"))
    stylized = thumbnail(load_image(job.root / "chains" / "0000" / "000002.png")).astype(np.float32)
    source = thumbnail(load_image(job.root / "source" / "000002.png")).astype(np.float32)
    assert seen.shape == stylized.shape
    assert np.abs(seen - stylized).mean() < 10, (np.abs(seen - stylized).mean(), np.abs(seen - source).mean())
    assert np.abs(seen - source).mean() > 30, np.abs(seen - source).mean()
    assert page.locator("#latest img.source").count() == 3 and page.locator("#loss-chart svg polyline").count() == 1

    job.finish(3)  # the meta refresh brings the new count without anyone reloading
    expect(page.locator("#done")).to_have_text("4", timeout=10_000)
    expect(page.locator("#latest figure").first).to_have_attribute("data-frame", "3")

    for frame in range(4, 8):
        job.finish(frame)
    job.page.write("finished", {"frames": 8, "warping_error": 0.00421, "content_loss": 2e5, "style_loss": 1000.0,
                                "per_frame": [{"frame": i, "warping_error": 0.004} for i in range(7)]})
    expect(page.locator("#state")).to_have_text("finished", timeout=10_000)
    expect(page.locator("#done")).to_have_text("8")
    expect(page.locator("#eval-warping")).to_have_text("0.00421")
    # A finished page stays put: no refresh tag, and the page runs no script that could reload it.
    assert page.locator('meta[http-equiv="refresh"]').count() == 0 and page.locator("script").count() == 0
    assert watched.errors == [] and watched.dialogs == []


def test_a_job_named_like_a_script_stays_inert(tmp_path, watched, served):
    name = "clips/<script>alert(1)</script>.mp4"
    job = GrowingJob(tmp_path / "job", renders=4, input_name=name, styles=['"><img src=x onerror=alert(2)>.jpg'])
    job.event(kind="redone", chain=0, frame=1, worker="<svg onload=alert(3)>", detail="<script>alert(4)</script>")
    job.finish(0, worker="<iframe src=javascript:alert(5)>")
    job.finish(1)
    page = watched.page
    page.goto(served(job.root))  # returns once the page has loaded: anything it would run has run
    sync_api.expect(page.locator("#input")).to_have_text(name)
    assert "<script>alert(4)</script>" in page.locator("#events").inner_text()
    assert "<iframe src=javascript:alert(5)>" in page.locator("#workers").inner_text()
    assert page.locator("script, iframe, svg[onload], img[src='x']").count() == 0
    assert not page.evaluate("[...document.querySelectorAll('*')].some("
                             "e => [...e.attributes].some(a => a.name.startsWith('on')))")
    assert watched.dialogs == [] and watched.errors == []


def test_a_planted_page_cannot_run_scripts(tmp_path, watched, served):
    """Even a page someone wrote into report/ by hand runs no script: the server forbids it."""
    job = GrowingJob(tmp_path / "job", renders=2)
    (job.root / "report").mkdir()
    (job.root / "report" / "index.html").write_text(
        "<p id=x>planted</p><script>alert(1)</script><img src=x onerror=alert(2)>")
    page = watched.page
    with page.expect_console_message(lambda message: "Content Security Policy" in message.text):
        page.goto(served(job.root))  # the refusal is what this waits for
    sync_api.expect(page.locator("#x")).to_have_text("planted")
    assert watched.dialogs == []


def test_a_finished_page_shared_alone_keeps_its_sheet_and_video(tmp_path, watched):
    """The finished report copied on its own (no folder beside it), opened from disk: the contact
    sheet and the side-by-side video are inside it and load."""
    from ray_style import video
    from ray_style.codec import png_bytes
    from ray_style.figures import contact_sheet

    job = GrowingJob(tmp_path / "job", renders=4)
    for frame in range(4):
        job.finish(frame)
    sources = [load_image(job.root / "source" / f"{i:06d}.png") for i in range(4)]
    (job.root / "report").mkdir(exist_ok=True)
    video.encode(iter([np.concatenate([s, s[::-1]], axis=1) for s in sources]),
                 job.root / "report" / "side_by_side.mp4", 2 * WIDTH, HEIGHT, 25)
    drawn = contact_sheet([("source", [(None, s) for s in sources])])
    (job.root / "report" / "contact_sheet.png").write_bytes(png_bytes(drawn))
    job.page.write("finished", {"frames": 4, "warping_error": 0.004, "content_loss": 2e5, "style_loss": 1e3})
    alone = tmp_path / "shared" / "report.html"
    alone.parent.mkdir()
    shutil.copy(job.root / "report" / "index.html", alone)
    page = watched.page
    page.goto(alone.as_uri())
    sheet = page.locator("img.sheet")
    assert np.abs(browser_pixels(sheet) - drawn).mean() < 3  # the sheet's pixels, decoded from the page (JPEG)
    duration = page.locator("#side-by-side").evaluate(
        "v => new Promise(done => { if (v.readyState >= 1) done(v.duration);"
        " v.onloadedmetadata = () => done(v.duration); v.onerror = () => done(-1); })")
    assert abs(duration - 4 / 25) < 0.05, duration
    assert watched.errors == [] and watched.dialogs == []
