"""What a job shows: the live page ``JOB/report/index.html``, rewritten atomically as frames
finish, and the report's files beside it when the job ends (:func:`write_report`).

One static, self-contained file: no JavaScript, no external fetches; charts are inline SVG
drawn here, thumbnails are ``data:`` URIs, so the file alone can be shared. While the job runs
a ``<meta http-equiv="refresh">`` reloads it; when the job ends it becomes the final report.
Everything that comes from the input or the job directory (paths, worker names, event
details) is HTML-escaped: nothing in a job directory may execute in the browser.

:class:`LivePage` tails ``frames.jsonl`` and ``events.jsonl`` from where it last stopped
(store.Tail), so a refresh costs the new lines only, however long the job; :func:`render_html`
is pure. Charts and contact sheets are :mod:`ray_style.figures`'.
"""
from __future__ import annotations

import base64
import collections
import html
import io
import json
import math
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import video
from .codec import THUMB_WIDTH, decode_png, jpeg_bytes, png_bytes, thumbnail, to_depth
from .figures import CHART_CSS, chart_file, chart_svg, contact_sheet
from .job import EVENTS, FRAMES, MANIFEST, NEWS_EVENTS, PAGE, REPORT, frame_key, source_key, thumb_key
from .store import LocalStore, Store, open_store

STATES = ("running", "finished", "failed", "stopped")
LATEST = 6  # thumbnails shown, newest first
RATE_WINDOW = 50  # recent renders the frame rate and ETA are measured over
WORKER_WINDOW = 20  # recent renders per worker for its frames per second
EVENTS_SHOWN = 30
INLINE_VIDEO_BYTES = 16 << 20  # a finished report's side-by-side video up to this size is kept inside the page
# Repeated in the page itself, for when the file is opened without our server (shared).
# frame-ancestors is left out: Chromium ignores it in a <meta> and says so in the console.
META_CSP = ("default-src 'none'; img-src 'self' data:; media-src 'self' data:; style-src 'unsafe-inline'; "
            "base-uri 'none'; form-action 'none'")


# ---------------------------------------------------------------- arithmetic
def recent_rate(times: list[float]) -> float | None:
    """Renders per second over ``times`` (finish times, oldest first), or None from fewer than
    two distinct times. With parallel workers this is the job's rate, not one worker's."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    if remaining <= 0:
        return 0.0
    return remaining / rate if rate else None


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _number(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------- thumbnails
def data_uri(image: np.ndarray, quality: int = 85) -> str:
    """A JPEG ``data:`` URI of ``image`` (``(H, W, 3)`` uint8)."""
    return jpeg_uri(jpeg_bytes(image, quality))


def jpeg_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- the snapshot
@dataclass
class Thumb:
    chain: int
    frame: int
    source: str | None  # data: URI, or None when the file could not be read
    stylized: str | None
    seconds: float | None = None
    worker: str | None = None


@dataclass
class WorkerRow:
    name: str
    renders: int
    frames_per_second: float | None  # while busy: 1 / mean seconds of its recent renders
    last_seen: float


@dataclass
class Snapshot:
    """Everything the page shows; :func:`render_html` turns it into HTML without I/O."""

    title: str
    state: str
    now: float
    done: int
    total: int
    rate: float | None = None  # renders per second, recent
    eta: float | None = None  # seconds
    run: dict = field(default_factory=dict)  # the manifest's "run": input, styles, output
    frame_size: tuple[int, int] | None = None
    latest: list[Thumb] = field(default_factory=list)
    loss: object = ()  # (frame, loss) pairs: a list, or an ``(N, 2)`` array
    warping: object = ()  # (frame, warping error) pairs
    workers: list[WorkerRow] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # newest first
    event_counts: dict = field(default_factory=dict)
    fallbacks: int = 0
    evaluation: dict | None = None
    message: str | None = None  # why the job failed or stopped
    refresh_s: int = 5
    links: list[str] = field(default_factory=list)  # report files beside index.html
    refining: int = 0  # of the renders, those of refinement passes (the seams' cost)
    seams: int = 0  # seams between chains inside a shot
    sheet: str | None = None  # the finished report's contact sheet, a data: URI (the page stays whole alone)
    side_by_side: str | None = None  # its side-by-side video, a data: URI when small enough
    side_by_side_bytes: int = 0  # that video's size, inlined or not


class LivePage:
    """Keeps a job's page up to date: ``write`` after frames finish, ``maybe_write`` to throttle.

    ``total_renders``: renders the job needs (a seam frame counts once per chain).
    """

    def __init__(self, job, total_renders: int, title: str | None = None, refresh_s: int = 5, refining: int = 0,
                 seams: int = 0):
        self.store = job if isinstance(job, Store) else open_store(job)
        self.total = total_renders
        self.refining, self.seams = refining, seams  # renders of refinement passes, seams inside shots
        self.title = title
        self.refresh_s = refresh_s
        self.frames, self.events = self.store.tail(FRAMES), self.store.tail(EVENTS)
        self.last_written = 0.0
        self.created = time.time()
        self._thumbs: dict[tuple[int, int], Thumb] = {}
        self._reset_frames()
        self._reset_events()

    def _reset_frames(self) -> None:
        self.done_keys: set[int] = set()
        self.times: collections.deque = collections.deque(maxlen=RATE_WINDOW)
        self.latest: collections.deque = collections.deque(maxlen=LATEST)
        self.loss, self.warping = FrameSeries(), FrameSeries()
        self.worker_renders: collections.Counter = collections.Counter()
        self.worker_seconds: dict[str, collections.deque] = {}
        self.worker_seen: dict[str, float] = {}
        self.fallbacks = 0

    def _reset_events(self) -> None:
        self.recent_events: collections.deque = collections.deque(maxlen=EVENTS_SHOWN)
        self.event_counts: collections.Counter = collections.Counter()

    # incremental state
    def update(self) -> None:
        """Read what was appended to frames.jsonl and events.jsonl since the last call."""
        records, restarted = self.frames.read()
        if restarted:
            self._reset_frames()
        for record in records:
            self._add_frame(record)
        events, restarted = self.events.read()
        if restarted:
            self._reset_events()
        for event in events:
            self.recent_events.append(event)
            self.event_counts[str(event.get("kind", "event"))] += 1

    def _add_frame(self, record: dict) -> None:
        chain, frame = record.get("chain"), record.get("frame")
        if not isinstance(chain, int) or not isinstance(frame, int):
            return
        self.done_keys.add(chain * 10_000_000 + frame)  # one int per render: 170,000 stay small
        finished = _float(record.get("time"))
        if finished is not None:
            self.times.append(finished)
        self.latest.append((chain, frame, _float(record.get("seconds")), record.get("worker")))
        if (loss := _float(record.get("loss"))) is not None:
            self.loss.set(frame, loss)
        if (warping := _float(record.get("warping_error"))) is not None:
            self.warping.set(frame, warping)
        if record.get("fallback"):
            self.fallbacks += 1
        worker = record.get("worker")
        if worker is not None:
            worker = str(worker)
            self.worker_renders[worker] += 1
            if (seconds := _float(record.get("seconds"))) is not None:
                self.worker_seconds.setdefault(worker, collections.deque(maxlen=WORKER_WINDOW)).append(seconds)
            self.worker_seen[worker] = max(self.worker_seen.get(worker, 0.0), finished or 0.0)

    def _thumb(self, chain: int, frame: int, seconds, worker) -> Thumb:
        key = (chain, frame)
        if key not in self._thumbs or None in (self._thumbs[key].source, self._thumbs[key].stylized):
            source = self._thumbnail_uri(source_key(frame), thumb_key(chain, frame, "source"))
            stylized = self._thumbnail_uri(frame_key(chain, frame), thumb_key(chain, frame, "stylized"))
            self._thumbs[key] = Thumb(chain, frame, source, stylized, seconds, None if worker is None else str(worker))
        return self._thumbs[key]

    def snapshot(self, state: str = "running", evaluation: dict | None = None, message: str | None = None,
                 now: float | None = None) -> Snapshot:
        if state not in STATES:
            raise ValueError(f"state {state!r}: use one of {', '.join(STATES)}")
        self.update()
        manifest = self._manifest()
        run = manifest.get("run", {}) if isinstance(manifest.get("run"), dict) else {}
        latest = [self._thumb(*entry) for entry in reversed(self.latest)]
        self._thumbs = {(t.chain, t.frame): t for t in latest}  # only what is shown stays cached
        done = min(len(self.done_keys), self.total) if self.total else len(self.done_keys)
        if state == "finished":  # a render whose log line a crash cut off still counts then
            done = self.total or done
        # A resumed job's log starts with the earlier run's renders; the gap between runs is no rate.
        times = [t for t in self.times if t >= self.created]
        rate = recent_rate(times if len(times) >= 2 else [t for t in self.times if t < self.created])
        warping = self.warping.points()
        if evaluation and evaluation.get("per_frame"):
            warping = [(row["frame"], row["warping_error"]) for row in evaluation["per_frame"]
                       if isinstance(row, dict) and _float(row.get("warping_error")) is not None
                       and isinstance(row.get("frame"), int)]
        report_files = self.store.sizes(REPORT)
        links = sorted(key[len(REPORT) + 1:] for key in report_files if key.count("/") == 1 and key != PAGE)
        sheet = self._image_uri(f"{REPORT}/contact_sheet.png", thumbnail_width=None) \
            if state == "finished" and "contact_sheet.png" in links else None
        video_bytes = report_files.get(f"{REPORT}/side_by_side.mp4", 0) if state == "finished" else 0
        side_by_side = self._video_uri(f"{REPORT}/side_by_side.mp4") if 0 < video_bytes <= INLINE_VIDEO_BYTES else None
        return Snapshot(
            title=self.title or _default_title(run), state=state, now=time.time() if now is None else now,
            done=done, total=self.total, rate=rate, eta=eta_seconds(self.total - done, rate) if state == "running"
            else None, run=run, frame_size=_frame_size(manifest), latest=latest,
            loss=self.loss.points(), warping=warping, workers=[
                WorkerRow(name, count, _per_second(self.worker_seconds.get(name)), self.worker_seen.get(name, 0.0))
                for name, count in sorted(self.worker_renders.items())],
            events=list(reversed(self.recent_events)), event_counts=dict(self.event_counts),
            fallbacks=self.fallbacks, evaluation=evaluation, message=message, refresh_s=self.refresh_s,
            links=links, refining=self.refining, seams=self.seams, sheet=sheet, side_by_side=side_by_side,
            side_by_side_bytes=video_bytes)

    # writing
    def write(self, state: str = "running", evaluation: dict | None = None, message: str | None = None) -> Path:
        """Rewrite ``JOB/report/index.html`` atomically; ``evaluation``: the final
        ``dataclasses.asdict(Evaluation)``; ``message``: why the job failed or stopped."""
        snapshot = self.snapshot(state, evaluation, message)
        self.store.write(PAGE, render_html(snapshot).encode())
        self.last_written = time.monotonic()
        return self.store.path(PAGE) if isinstance(self.store, LocalStore) else self.store.describe(PAGE)

    def _manifest(self) -> dict:
        try:
            manifest = json.loads(self.store.read(MANIFEST))
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def _image_uri(self, key: str, thumbnail_width: int | None = THUMB_WIDTH) -> str | None:
        """A stored image as a ``data:`` URI (a thumbnail by default), or None when it is
        missing or unreadable: the page says so instead of failing the job."""
        try:
            data = self.store.read(key)
            if data[:8] == b"\x89PNG\r\n\x1a\n":  # a frame: 8 or 16 bits (the page shows 8)
                pixels = to_depth(decode_png(data), np.uint8)
            else:
                with Image.open(io.BytesIO(data)) as image:
                    pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        return data_uri(thumbnail(pixels, thumbnail_width) if thumbnail_width else pixels,
                        quality=85 if thumbnail_width else 90)

    def _video_uri(self, key: str) -> str | None:
        try:
            return "data:video/mp4;base64," + base64.b64encode(self.store.read(key)).decode("ascii")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _thumbnail_uri(self, key: str, made: str) -> str | None:
        """The thumbnail the worker made (``made``: a small JPEG), else one made here from the
        full frame (a worker that hands frames back, or an older job)."""
        try:
            return jpeg_uri(self.store.read(made))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return self._image_uri(key)

    def maybe_write(self, min_interval_s: float = 2.0, state: str = "running") -> bool:
        """``write`` unless the page was written less than ``min_interval_s`` ago."""
        if self.last_written and time.monotonic() - self.last_written < min_interval_s:
            return False
        self.write(state)
        return True


class FrameSeries:
    """One value per frame index (the last one set wins: a seam frame has two renders), kept
    in a growing array so a 170,000-frame chart costs no per-refresh sort."""

    def __init__(self):
        self.values = np.full(1024, np.nan)

    def set(self, frame: int, value: float) -> None:
        if frame < 0:
            return
        if frame >= len(self.values):
            grown = np.full(max(2 * len(self.values), frame + 1), np.nan)
            grown[:len(self.values)] = self.values
            self.values = grown
        self.values[frame] = value

    def points(self) -> np.ndarray:
        """``(N, 2)``: frame, value for the frames that have one, in frame order."""
        frames = np.flatnonzero(np.isfinite(self.values))
        return np.stack([frames.astype(np.float64), self.values[frames]], axis=1)


def _float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _per_second(seconds) -> float | None:
    if not seconds:
        return None
    mean = sum(seconds) / len(seconds)
    return 1.0 / mean if mean > 0 else None


def _frame_size(manifest: dict) -> tuple[int, int] | None:
    size = manifest.get("frame_size")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return size[0], size[1]
    return None


def _default_title(run: dict) -> str:
    name = Path(str(run.get("input") or "video")).name
    styles = run.get("styles") if isinstance(run.get("styles"), list) else []
    styled = " × ".join(Path(str(s)).name for s in styles)
    return f"{name} × {styled}" if styled else name


# ---------------------------------------------------------------- HTML
def _e(value) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:12px 16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px;word-break:break-all}.state{font-weight:600;padding:1px 8px;border-radius:9px}
.running{background:#dbeafe}.finished{background:#dcfce7}.failed{background:#fee2e2}.stopped{background:#fef3c7}
.bar{height:14px;background:#e5e7eb;border-radius:7px;overflow:hidden;margin:6px 0}
.bar div{height:100%;background:#2563eb}
.stats{display:flex;gap:26px;flex-wrap:wrap}.stats b{font-size:20px;display:block}
.thumbs{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}
figure{margin:0;background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:6px}
figure .pair{display:flex;gap:4px}figure img{width:50%;height:auto;display:block}
figcaption{font-size:12px;color:#555;margin-top:3px}.missing{width:50%;font-size:12px;color:#999}
.charts{display:flex;gap:12px;flex-wrap:wrap}
svg{background:#fff;border:1px solid #e5e7eb;border-radius:6px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.detail{word-break:break-all}
.msg{padding:8px;border-radius:6px;background:#fee2e2}video,.sheet{max-width:100%}
""" + CHART_CSS


def render_html(snapshot: Snapshot) -> str:
    """The whole page for ``snapshot``: a pure function, no I/O."""
    s = snapshot
    head = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_e(META_CSP)}">',
            '<meta name="referrer" content="no-referrer">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">']
    if s.state == "running":
        head.append(f'<meta http-equiv="refresh" content="{int(s.refresh_s)}">')
    head += ['<link rel="icon" href="data:,">', f"<title>{_e(s.title)} — ray-style</title>",
             f"<style>{CSS}</style></head><body>"]
    body = [_header(s), _progress(s)]
    if s.message:
        body.append(f'<p class="msg" id="message">{_e(s.message)}</p>')
    if s.evaluation is not None:
        body.append(_evaluation(s))
    body += [_thumbnails(s), _charts(s), _workers(s), _events(s), "</body></html>"]
    return "".join(head + body) + "\n"


def _header(s: Snapshot) -> str:
    run = s.run
    styles = run.get("styles") if isinstance(run.get("styles"), list) else []
    size = f" · {s.frame_size[0]}×{s.frame_size[1]} px" if s.frame_size else ""
    return (f"<h1>{_e(s.title)}</h1>"
            f'<p class="meta"><span class="state {_e(s.state)}" id="state">{_e(s.state)}</span> · updated '
            f'{_e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.now)))}{_e(size)}<br>'
            f'input <span id="input">{_e(run.get("input", "—"))}</span><br>'
            f'style {_e(", ".join(str(p) for p in styles) or "—")} · output {_e(run.get("output", "—"))}</p>')


def _progress(s: Snapshot) -> str:
    share = s.done / s.total if s.total else 0.0
    rate = (f"{s.rate:.3g} frames/s ({1 / s.rate:.3g} s per frame)" if s.rate else "—")
    eta = format_duration(s.eta) if s.state == "running" else ("done" if s.state == "finished" else "—")
    return ("<h2>Progress</h2>"
            f'<div class="bar" title="{share:.1%}"><div style="width:{share * 100:.2f}%"></div></div>'
            '<div class="stats">'
            f'<div><b><span id="done">{s.done}</span> / <span id="total">{s.total}</span></b>renders done '
            f"({share:.1%}){_refining(s)}</div>"
            f'<div><b id="rate">{_e(rate)}</b>{"recent rate" if s.state == "running" else "rate near the end"}</div>'
            f'<div><b id="eta">{_e(eta)}</b>time left</div></div>')


def _refining(s: Snapshot) -> str:
    if not s.refining:
        return ""
    return (f'<br><span class="meta" id="refining">{s.refining} of them refine (+'
            f"{s.refining / max(s.total - s.refining, 1):.0%}: the {s.seams} seam{'s' if s.seams != 1 else ''} "
            "between chains inside shots; --passes 0 skips them)</span>")


def _thumbnails(s: Snapshot) -> str:
    if not s.latest:
        return '<h2>Latest frames</h2><p id="latest">no frame finished yet</p>'
    figures = []
    for t in s.latest:
        images = []
        for kind, uri in (("source", t.source), ("stylized", t.stylized)):
            alt = f"{kind} frame {t.frame}"
            images.append(f'<img class="{kind}" src="{_e(uri)}" alt="{_e(alt)}">' if uri
                          else f'<span class="missing">{_e(alt)} unavailable</span>')
        took = f" · {t.seconds:.1f} s" if t.seconds is not None else ""
        who = f" · {_e(t.worker)}" if t.worker else ""
        figures.append(f'<figure data-frame="{t.frame}" data-chain="{t.chain}"><div class="pair">{"".join(images)}'
                       f"</div><figcaption>frame {t.frame} · chain {t.chain}{_e(took)}{who}</figcaption></figure>")
    return ('<h2>Latest frames <small>(source · stylized, newest first)</small></h2>'
            f'<div class="thumbs" id="latest">{"".join(figures)}</div>')


def _charts(s: Snapshot) -> str:
    warping_title = ("warping error to the next frame" if s.evaluation else "warping error (per frame)")
    return ('<h2>Per frame</h2><div class="charts">'
            f'<div id="loss-chart">{chart_svg(s.loss, "loss (α·content + β·style)")}</div>'
            f'<div id="warping-chart">{chart_svg(s.warping, warping_title)}</div></div>')


def _workers(s: Snapshot) -> str:
    if not s.workers:
        return '<h2>Workers</h2><p id="workers">none seen yet</p>'
    rows = "".join(
        f"<tr><td>{_e(w.name)}</td><td class=n>{w.renders}</td>"
        f"<td class=n>{'—' if w.frames_per_second is None else f'{w.frames_per_second:.3g}'}</td>"
        f"<td class=n>{_e(_when(s, w.last_seen))}</td></tr>" for w in s.workers)
    return ('<h2>Workers</h2><table id="workers"><tr><th>worker</th><th>renders</th>'
            f"<th>frames/s while busy</th><th>last frame</th></tr>{rows}</table>")


def _when(s: Snapshot, moment: float) -> str:
    """How long ago, on a page that refreshes itself; a clock time on one that no longer changes
    (a finished page read tomorrow must not say "2 min ago")."""
    if not moment:
        return "—"
    if s.state == "running":
        return format_duration(s.now - moment) + " ago"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _events(s: Snapshot) -> str:
    problems = {kind: count for kind, count in s.event_counts.items() if kind not in NEWS_EVENTS}
    summary = ", ".join(f"{count} {_e(kind)}" for kind, count in sorted(problems.items())) or "none"
    fallback = f"; {s.fallbacks} renders fell back" if s.fallbacks else ""
    joined = s.event_counts.get("joined", 0)
    news = f'<p id="event-news">{joined} worker{"s" if joined != 1 else ""} joined</p>' if joined else ""
    out = f'<h2>Failures and redone frames</h2><p id="event-counts">{summary}{fallback}</p>{news}'
    if s.events:
        rows = []
        for event in s.events:
            when = _float(event.get("time"))
            stamp = time.strftime("%H:%M:%S", time.localtime(when)) if when is not None else "—"
            rows.append(f"<tr><td>{_e(stamp)}</td><td>{_e(event.get('kind', 'event'))}</td>"
                        f"<td class=n>{_e(event.get('chain', '—'))}</td><td class=n>{_e(event.get('frame', '—'))}</td>"
                        f"<td>{_e(event.get('worker', '—'))}</td><td class=detail>{_e(event.get('detail', ''))}</td>"
                        "</tr>")
        out += ('<table id="events"><tr><th>time</th><th>event</th><th>chain</th><th>frame</th><th>worker</th>'
                f"<th>detail</th></tr>{''.join(rows)}</table>")
    return out


def _evaluation(s: Snapshot) -> str:
    e = s.evaluation or {}
    rows = [("warping error", e.get("warping_error"), "mean over consecutive pairs, lower is steadier"),
            ("content loss", e.get("content_loss"), "eq. 1 against the source, mean per frame"),
            ("style loss", e.get("style_loss"), "eq. 5 against the artwork, mean per frame")]
    table = "".join(f'<tr><td>{name}</td><td class=n id="eval-{name.split()[0]}">{_e(_number(value))}</td>'
                    f"<td>{note}</td></tr>" for name, value, note in rows)
    extra = ""
    if s.sheet:
        extra += f'<p><img class="sheet" src="{_e(s.sheet)}" alt="contact sheet: source above, stylized below"></p>'
    if s.side_by_side:
        extra += f'<p><video id="side-by-side" controls preload="metadata" src="{_e(s.side_by_side)}"></video></p>'
    elif "side_by_side.mp4" in s.links:  # too large to carry inside the page: beside it
        extra += (f'<p><video id="side-by-side" controls preload="metadata" src="side_by_side.mp4"></video><br>'
                  f'<span class="meta">side_by_side.mp4 ({s.side_by_side_bytes / 2**20:.0f} MB) is kept beside this '
                  "page, not inside it: share the report folder with it</span></p>")
    # "./" and quoting keep a file named like a URL ("javascript:…") a relative path.
    files = " · ".join(f'<a href="./{_e(urllib.parse.quote(name))}">{_e(name)}</a>' for name in s.links)
    return (f'<h2>Final evaluation</h2><table id="evaluation">{table}</table>{extra}'
            + (f'<p class="meta">report files: {files}</p>' if files else ""))


# ---------------------------------------------------------------- the report's files
def write_report(evaluation, output, source, folder: Store | str | Path, prefix: str = "") -> Store:
    """evaluation.json, per-frame charts (SVG), a contact sheet and a side-by-side preview MP4
    of an :class:`~ray_style.evaluate.Evaluation` (``output`` and ``source``: paths or
    VideoInfos of the two videos) into ``folder`` (a store, a folder or a URL) under ``prefix``."""
    import tempfile

    store = folder if isinstance(folder, Store) else open_store(folder)
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> None:
        store.write(f"{prefix}/{name}" if prefix else name, data)

    put("evaluation.json", json.dumps(asdict(evaluation), indent=1).encode())
    rows = evaluation.per_frame

    def column(key: str) -> list:
        return [(r["frame"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]

    seams = [seam["frame"] - 1 for seam in evaluation.seams]  # drawn at the pair's first frame
    charts = {"warping_error.svg": ({"output": column("warping_error"),
                                     "source (floor)": column("source_warping_error")},
                                    "warping error to the next frame; seams in red")}
    if evaluation.long_range_warping_error:
        series = {}
        for k in evaluation.long_range_warping_error:
            series[f"output, k = {k}"] = column(f"warping_error_k{k}")
            series[f"source, k = {k}"] = column(f"source_warping_error_k{k}")
        charts["long_range_warping_error.svg"] = (series, "long-range warping error to frame + k")
    if evaluation.content_loss is not None:
        charts["content_loss.svg"] = (column("content_loss"), "content loss (eq. 1)")
        charts["style_loss.svg"] = (column("style_loss"), "style loss (eq. 5)")
    for name, (series, title) in charts.items():
        put(name, chart_file(series, title, marks=seams if name == "warping_error.svg" else (), width=640,
                             height=220).encode())
    out_info = output if isinstance(output, video.VideoInfo) else video.probe(output)
    src_info = source if isinstance(source, video.VideoInfo) else video.probe(source)
    size = (evaluation.width, evaluation.height)
    picks = set(np.linspace(0, evaluation.frames - 1, min(6, evaluation.frames)).round().astype(int).tolist())
    sheet: list[tuple[int, np.ndarray, np.ndarray]] = []

    def side_by_side():  # one pass over both videos feeds the preview and the contact sheet
        for index, (src, out) in enumerate(zip(video.decode(src_info, *size), video.decode(out_info, *size))):
            if index in picks:
                sheet.append((index, src, out))
            yield np.concatenate([src, out], axis=1)

    with tempfile.TemporaryDirectory(prefix="ray-style-report-") as work:
        preview = video.encode(side_by_side(), Path(work) / "side_by_side.mp4", 2 * size[0], size[1], out_info.fps)
        put("side_by_side.mp4", preview.read_bytes())
    put("contact_sheet.png", png_bytes(contact_sheet([("source", [(f"frame {i}", src) for i, src, _ in sheet]),
                                                      ("stylized", [(None, out) for _, _, out in sheet])])))
    return store


__all__ = ["LivePage", "Snapshot", "Thumb", "WorkerRow", "render_html", "recent_rate", "eta_seconds",
           "format_duration", "thumbnail", "data_uri", "write_report"]
