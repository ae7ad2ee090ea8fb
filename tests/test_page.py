import base64
import io
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from ray_style import figures, store
from ray_style.errors import StorageError
from ray_style.images import save_image
from ray_style.page import LivePage, Snapshot, eta_seconds, format_duration, recent_rate, render_html
from ray_style.store import Tail

from .conftest import rgb


def picture(height, width, seed):
    """A smooth random picture: JPEG thumbnails keep it recognizable (noise they would not)."""
    return np.asarray(Image.fromarray(rgb(3, 5, seed)).resize((width, height), Image.Resampling.BILINEAR))


def make_job(root, total=6, input_name="clip.mp4", size=(40, 24)):
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"version": "t", "input": {"sha256": "0", "frames": total, "fps": "25", "audio": None},
                "styles": ["0"], "weights": "random", "settings": {"style": {}}, "frame_size": list(size),
                "run": {"input": input_name, "styles": ["art.png"], "output": "out.mp4"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "source").mkdir(exist_ok=True)
    for frame in range(total):
        save_image(picture(size[1], size[0], seed=frame), root / "source" / f"{frame:06d}.png")
    return root


def finish(root, frame, chain=0, time_=1000.0, **extra):
    path = root / "chains" / f"{chain:04d}" / f"{frame:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(255 - picture(24, 40, seed=frame), path)
    record = {"chain": chain, "frame": frame, "time": time_, "loss": 10.0 + frame, "content_loss": 1.0,
              "style_loss": 2.0, "evaluations": 20, "seconds": 2.0, "worker": "w1", **extra}
    with open(root / "frames.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


def snapshot(**fields):
    base = dict(title="t", state="running", now=1000.0, done=0, total=10)
    return Snapshot(**{**base, **fields})


def test_file_names_and_event_text_are_escaped(tmp_path):
    root = make_job(tmp_path / "job", input_name="x/<script>alert(1)</script>.mp4")
    finish(root, 0, worker='"><img src=x onerror=alert(2)>')
    with open(root / "events.jsonl", "w") as log:
        log.write(json.dumps({"time": 1.0, "kind": "failed<b>", "chain": 0, "frame": 0,
                              "detail": "</td><script>alert(3)</script>"}) + "\n")
    text = LivePage(root, 6).write().read_text()
    assert "<script" not in text.lower() and "<img src=x" not in text and "failed<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;/td&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    assert "failed&lt;b&gt;" in text


def test_report_file_named_like_a_url_stays_a_relative_link(tmp_path):
    root = make_job(tmp_path / "job")
    (root / "report").mkdir()
    (root / "report" / "javascript:alert(1)").write_text("x")
    text = LivePage(root, 6).write("finished", {"warping_error": 0.01}).read_text()
    assert 'href="./javascript%3Aalert%281%29"' in text and 'href="javascript' not in text


def test_eta_arithmetic():
    assert recent_rate([10.0]) is None and recent_rate([5.0, 5.0]) is None
    assert recent_rate([0.0, 2.0, 4.0, 6.0]) == pytest.approx(0.5)
    assert eta_seconds(30, 0.5) == pytest.approx(60.0)
    assert eta_seconds(30, None) is None and eta_seconds(0, None) == 0.0
    assert format_duration(59.4) == "59 s" and format_duration(61) == "1 min 01 s"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min" and format_duration(None) == "unknown"
    assert format_duration(50 * 3600) == "2 d 2 h"


def test_eta_from_the_recent_rate_on_the_page(tmp_path):
    root = make_job(tmp_path / "job", total=6)
    live = LivePage(root, 20)
    live.created = 0.0  # the records below count as this run's
    for frame in range(4):
        finish(root, frame, time_=100.0 + 3 * frame)  # one render every 3 s
    text = live.write().read_text()
    assert re.search(r'<span id="done">4</span> / <span id="total">20</span>', text)
    assert '<b id="eta">48 s</b>' in text  # 16 left at 1/3 per second
    assert "0.333 frames/s" in text


def test_a_resumed_jobs_gap_is_not_taken_as_its_rate(tmp_path):
    root = make_job(tmp_path / "job", total=6)
    for frame in range(3):
        finish(root, frame, time_=100.0 + frame)  # an earlier run
    live = LivePage(root, 10)
    live.created = 1000.0
    finish(root, 3, time_=5000.0)
    finish(root, 4, time_=5010.0)
    assert '<b id="eta">50 s</b>' in live.write().read_text()  # 5 left at 0.1 per second


def test_tail_reads_only_appended_lines_and_waits_for_a_cut_short_one(tmp_path):
    path = tmp_path / "frames.jsonl"
    tail = Tail(path)
    assert tail.read() == ([], False)
    path.write_text('{"frame": 0}\n{"frame": 1}\n{"fra')
    assert [r["frame"] for r in tail.read()[0]] == [0, 1]
    assert tail.read() == ([], False)
    with open(path, "a") as handle:  # a resumed run appends after the torn bytes
        handle.write('{"frame": 2}\n{"frame": 3}\n')
    assert [r["frame"] for r in tail.read()[0]] == [2, 3]
    path.write_text('{"frame": 9}\n')  # --restart: a new, shorter file
    records, restarted = tail.read()
    assert restarted and [r["frame"] for r in records] == [9]


def test_live_page_state_grows_incrementally(tmp_path, monkeypatch):
    root = make_job(tmp_path / "job", total=6)
    live = LivePage(root, 6)
    finish(root, 0)
    finish(root, 1)
    live.update()
    read = []
    original = store.parse_line
    monkeypatch.setattr(store, "parse_line", lambda line: read.append(line) or original(line))
    finish(root, 2)
    with open(root / "frames.jsonl", "a") as log:
        log.write('{"chain": 0, "frame": 3, "ti')  # torn by a crash
    text = live.write().read_text()
    assert len(read) == 1  # the two earlier lines were not parsed again
    assert '<span id="done">3</span>' in text
    assert [f.frame for f in live.snapshot().latest] == [2, 1, 0]


def test_thumbnails_show_source_beside_stylized(tmp_path):
    root = make_job(tmp_path / "job", total=3)
    finish(root, 1)
    text = LivePage(root, 3).write().read_text()
    uris = dict(re.findall(r'<img class="(source|stylized)" src="data:image/jpeg;base64,([^"]+)"', text))

    def decode(uri):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")).astype(float)

    source = picture(24, 40, seed=1).astype(float)
    stylized = 255 - source
    assert np.abs(decode(uris["stylized"]) - stylized).mean() < np.abs(decode(uris["stylized"]) - source).mean() / 4
    assert np.abs(decode(uris["source"]) - source).mean() < np.abs(decode(uris["source"]) - stylized).mean() / 4


def test_write_is_atomic_and_finished_page_does_not_refresh(tmp_path, monkeypatch):
    root = make_job(tmp_path / "job")
    finish(root, 0)
    live = LivePage(root, 6, refresh_s=3)
    path = live.write()
    assert '<meta http-equiv="refresh" content="3">' in path.read_text()
    evaluation = {"frames": 6, "warping_error": 0.00123, "content_loss": 4.5e5, "style_loss": 7.0,
                  "per_frame": [{"frame": i, "warping_error": 0.001 * i} for i in range(5)]}
    text = live.write("finished", evaluation).read_text()
    assert 'http-equiv="refresh"' not in text and 'id="state">finished<' in text
    assert 'id="eval-warping">0.00123<' in text and 'id="eval-content">4.5e+05<' in text
    assert [p.name for p in (root / "report").iterdir()] == ["index.html"]  # no temp file left behind

    def crash(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "write_bytes", crash)
    with pytest.raises((StorageError, OSError)):
        live.write("failed", message="boom")
    assert path.read_text() == text  # the old page survives a failed write
    assert [p.name for p in (root / "report").iterdir()] == ["index.html"]


def test_failed_and_stopped_pages_say_why_and_do_not_refresh():
    for state in ("failed", "stopped"):
        text = render_html(snapshot(state=state, message="frame 3 failed 3 times: <NaN>"))
        assert 'http-equiv="refresh"' not in text and "frame 3 failed 3 times: &lt;NaN&gt;" in text
    with pytest.raises(ValueError):
        LivePage("/nonexistent", 1).snapshot("paused")


def test_maybe_write_throttles(tmp_path):
    root = make_job(tmp_path / "job")
    live = LivePage(root, 6)
    assert live.maybe_write(60.0) is True
    finish(root, 0)
    assert live.maybe_write(60.0) is False
    assert '<span id="done">0</span>' in (root / "report" / "index.html").read_text()
    assert live.maybe_write(0.0) is True
    assert '<span id="done">1</span>' in (root / "report" / "index.html").read_text()


def test_page_has_no_script_and_no_external_fetch(tmp_path):
    root = make_job(tmp_path / "job", total=6)
    for frame in range(6):
        finish(root, frame, time_=100.0 + frame, warping_error=0.01 * frame)
    text = LivePage(root, 6).write().read_text()
    assert "<script" not in text and "javascript:" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<svg" in text and "<polyline" in text


def test_long_charts_are_binned():
    points = [(i, float(i % 7)) for i in range(170_000)]
    svg = figures.chart_svg(points, "loss", max_points=600)
    coords = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert 500 <= len(coords) <= 600 and len(svg) < 20_000
    assert "no values yet" in figures.chart_svg([], "warping error")


def test_a_finished_page_carries_its_video_and_fixed_times(tmp_path, monkeypatch):
    """Shared alone, the finished page keeps its side-by-side video (inside it, when small) and
    says when things happened, not "… ago" frozen at the time it was written."""
    from ray_style import page as pages

    root = make_job(tmp_path / "job")
    finish(root, 0, time_=1_700_000_000.0)
    (root / "report").mkdir()
    clip = bytes(range(256)) * 8  # the bytes travel as they are
    (root / "report" / "side_by_side.mp4").write_bytes(clip)
    live = LivePage(root, 6)
    running = live.write("running").read_text()
    assert " ago<" in running and "data:video/mp4" not in running and "recent rate" in running
    text = live.write("finished", {"warping_error": 0.01}).read_text()
    uri = re.search(r'<video id="side-by-side"[^>]* src="data:video/mp4;base64,([^"]+)"', text)
    assert uri and base64.b64decode(uri.group(1)) == clip
    assert " ago<" not in text and "rate near the end" in text
    assert f'>{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000.0))}<' in text
    monkeypatch.setattr(pages, "INLINE_VIDEO_BYTES", 1000)  # a film's side-by-side stays beside the page
    text = live.write("finished", {"warping_error": 0.01}).read_text()
    assert 'src="side_by_side.mp4"' in text and "data:video/mp4" not in text and "kept beside this page" in text


def test_workers_joining_are_news_not_failures(tmp_path):
    root = make_job(tmp_path / "job")
    with open(root / "events.jsonl", "w") as log:
        for worker in ("a", "b"):
            log.write(json.dumps({"time": 1.0, "kind": "joined", "worker": worker,
                                  "detail": f"worker {worker} ready on cpu"}) + "\n")
    text = LivePage(root, 6).write().read_text()
    assert '<p id="event-counts">none</p>' in text and '<p id="event-news">2 workers joined</p>' in text
    with open(root / "events.jsonl", "a") as log:
        log.write(json.dumps({"time": 2.0, "kind": "lost", "worker": "a", "detail": "worker a lost"}) + "\n")
    text = LivePage(root, 6).write().read_text()
    assert '<p id="event-counts">1 lost</p>' in text


def test_the_page_states_what_seam_refinement_costs(tmp_path):
    root = make_job(tmp_path / "job")
    text = LivePage(root, 16, refining=4, seams=2).write().read_text()
    assert '<span class="meta" id="refining">4 of them refine (+33%: the 2 seams between chains inside shots; ' \
           "--passes 0 skips them)</span>" in text
    assert 'id="refining"' not in LivePage(root, 12).write().read_text()
