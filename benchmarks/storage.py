"""What the driver carries when the job lives in a bucket: bytes and CPU per frame, and the
wall time against the same job in a local folder.

    python -m benchmarks.storage [--frames 50] [--workers 2] [--busy-only]

On a local Ray (``address="local"``, ``--workers`` one-thread CPU workers) and a real S3
server (SeaweedFS, from the test extra), the 720p sample (2 s of Big Buck Bunny as shot, not
upscaled) is stylized twice at full size with the same settings: once with every path in a
folder, once with every path in the bucket. Counted in the driver process:

- the render loop (the driver's main thread while frames render): the bytes of every task it
  sends and every result it receives (pickled, as Ray ships them), the bytes it reads and
  writes in the job's store, and its CPU time — per frame; the live page's rewrites (at most
  one every 2 s, whatever the frame rate) apart, per rewrite;
- the decode before the render (source frames written into the job) and the encode beside it
  (final frames read back), per frame: what still passes through the head;
- the wall time of each run.

The frames are optimized with the first VGG layer only (random weights, 2 evaluations): the
driver's work does not depend on the optimization, and a CPU renders a 720p frame of it in
seconds. Writes a table into BENCHMARKS.md (``--no-write`` to print only).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "bigbuckbunny_720p_2s.mp4"
STYLE = ROOT / "samples" / "starry_night.jpg"
RESULTS = ROOT / "benchmarks" / "results_storage_cpu.json"
BEGIN, END = "<!-- storage:begin -->", "<!-- storage:end -->"
BUSY_SIZE = 128  # px: frames a CPU worker renders faster than the driver's loop turns


class Counters:
    """Bytes and CPU the driver process spends, by where they were spent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, float] = {}

    def add(self, name: str, amount: float) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0.0) + amount


def _instrument(counters: Counters, monkey: list) -> None:
    """Wrap the driver's store, pool and stages to count (undone by restoring ``monkey``)."""
    from ray_style import page, runner, store, workers

    def wrap(owner, name, wrapper):
        original = getattr(owner, name)
        monkey.append((owner, name, original))
        setattr(owner, name, wrapper(original))

    stage = {"name": "other"}

    def place() -> str:
        if threading.current_thread() is threading.main_thread():
            return stage["name"]
        return "encode" if stage["name"] in ("render", "page") else stage["name"]  # the encode's threads

    for cls in (store.LocalStore, store.ObjectStore):
        wrap(cls, "read", lambda real: lambda self, key: (lambda data: (counters.add(f"{place()}_read", len(data)),
                                                                        data)[1])(real(self, key)))
        wrap(cls, "write", lambda real: lambda self, key, data, durable=True: (
            counters.add(f"{place()}_written", len(data)), real(self, key, data, durable))[1])
        wrap(cls, "append", lambda real: lambda self, log, record: (
            counters.add(f"{place()}_written", len(json.dumps(record))), real(self, log, record))[1])
    wrap(workers.RayExecutor, "submit", lambda real: lambda self, item, task: (
        counters.add("tasks_bytes", len(pickle.dumps(task))), counters.add("tasks", 1), real(self, item, task))[2])

    def finished(real):
        def count(self, ref):
            outputs = real(self, ref)
            counters.add("results_bytes", sum(len(pickle.dumps(out)) for _, out in outputs))
            return outputs
        return count

    wrap(workers.RayExecutor, "_finished", finished)

    def staged(name):
        def wrapper(real):
            def run(*args, **kwargs):
                stage["name"] = name
                cpu = time.thread_time()
                started = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    counters.add(f"{name}_cpu_s", time.thread_time() - cpu)
                    counters.add(f"{name}_s", time.perf_counter() - started)
                    stage["name"] = "other"
            return run
        return wrapper

    wrap(runner, "decode", staged("decode"))
    wrap(runner, "render", staged("render"))

    def client_cpu() -> float:
        """CPU of the store client's thread (fsspec's event loop: signing, HTTP), which every
        store call of the process goes through: the loop's records, the lease, the encode's reads."""
        import psutil

        ids = {t.native_id for t in threading.enumerate() if t.name == "fsspecIO"}
        return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)

    def loop(real):  # the render loop proper, inside render (which also sets the pool up)
        def run(*args, **kwargs):
            stage["loop"] = True
            cpu, client = time.thread_time(), client_cpu()
            try:
                return real(*args, **kwargs)
            finally:
                counters.add("loop_cpu_s", time.thread_time() - cpu)
                counters.add("client_cpu_s", client_cpu() - client)
                stage["loop"] = False
        return run

    wrap(runner, "drive", loop)

    def page_write(real):
        def write(self, *args, **kwargs):
            outer, stage["name"] = stage["name"], "page"
            cpu = time.thread_time()
            try:
                return real(self, *args, **kwargs)
            finally:
                spent = time.thread_time() - cpu
                counters.add("page_cpu_s", spent)
                if outer == "render":
                    counters.add("page_in_render_cpu_s", spent)
                    if stage.get("loop"):
                        counters.add("page_in_loop_cpu_s", spent)
                counters.add("page_writes", 1)
                stage["name"] = outer
        return write

    wrap(page.LivePage, "write", page_write)


def run_once(where: str, clip: str, style: str, output: str, frames: int, workers: int, size: int = 1280) -> dict:
    import ray

    from ray_style.runner import stylize_video
    from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings

    settings = VideoSettings(style=StyleSettings(size=size, iters=2, content_weight=1.0, style_weight=1e3,
                                                 content_layers=("relu1_1",), style_layers=("relu1_1",),
                                                 weights="random"), segment_length=frames // workers, overlap=2)
    counters, monkey = Counters(), []
    _instrument(counters, monkey)
    ray.init(address="local", num_cpus=workers, object_store_memory=300 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        started = time.perf_counter()
        result = stylize_video(clip, [style], output, settings, report=False,
                               executor=ExecutorOptions(max_workers=workers, threads=1))
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
        for owner, name, original in reversed(monkey):
            setattr(owner, name, original)
    v, renders = counters.values, max(1.0, counters.values.get("tasks", 0))
    per = lambda name: v.get(name, 0.0) / renders  # noqa: E731
    writes = max(1.0, v.get("page_writes", 0))
    # The page is rewritten from the render loop's thread: its CPU is counted apart.
    loop_cpu = v.get("loop_cpu_s", 0.0) - v.get("page_in_loop_cpu_s", 0.0)
    setup_cpu = v.get("render_cpu_s", 0.0) - v.get("page_in_render_cpu_s", 0.0) - loop_cpu
    return {"where": where, "size": size, "frames": result.frames, "renders": int(renders), "wall_s": round(wall, 1),
            "task_bytes": round(per("tasks_bytes")), "result_bytes": round(per("results_bytes")),
            "render_store_bytes": round(per("render_read") + per("render_written")),
            "render_cpu_ms": round(1000 * loop_cpu / renders, 2), "setup_cpu_ms": round(1000 * setup_cpu),
            "client_cpu_ms": round(1000 * v.get("client_cpu_s", 0.0) / renders, 2),
            "page_writes": int(v.get("page_writes", 0)),
            "page_bytes": round((v.get("page_read", 0.0) + v.get("page_written", 0.0)) / writes),
            "page_cpu_ms": round(1000 * v.get("page_cpu_s", 0.0) / writes, 1),
            "decode_written_bytes": round(v.get("decode_written", 0.0) / result.frames),
            "encode_read_bytes": round(v.get("encode_read", 0.0) / result.frames)}


def measure(frames: int, workers: int, busy_only: dict | None = None) -> dict:
    from ray_style import store
    from tests.s3 import SeaweedS3

    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-style-storage-") as work:
        work = Path(work)
        server = SeaweedS3(work / "seaweedfs").start()
        try:
            os.environ.update(server.environment())
            server.make_bucket("bench")
            fs = store.filesystem("s3://bench")
            fs.put_file(str(CLIP), "s3://bench/in/clip.mp4")
            fs.put_file(str(STYLE), "s3://bench/art/style.jpg")
            if busy_only:  # keep the stored full-size rows
                rows = busy_only["rows"]
            else:
                rows.append(run_once("folder", str(CLIP), str(STYLE), str(work / "out.mp4"), frames, workers))
                rows.append(run_once("bucket", "s3://bench/in/clip.mp4", "s3://bench/art/style.jpg",
                                     "s3://bench/out/clip.mp4", frames, workers))
            # The same at 128 px: frames come back faster than the loop turns, as from GPUs, so
            # its CPU per render is the busy loop's, with no idle polls shared out among renders.
            busy = [run_once("folder", str(CLIP), str(STYLE), str(work / "busy.mp4"), frames, workers, BUSY_SIZE),
                    run_once("bucket", "s3://bench/in/clip.mp4", "s3://bench/art/style.jpg",
                             "s3://bench/out/busy.mp4", frames, workers, BUSY_SIZE)]
        finally:
            server.stop()
    return {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "workers": workers, "clip": CLIP.name, "rows": rows, "busy": busy,
            "wall_ratio": round(rows[1]["wall_s"] / rows[0]["wall_s"], 2)}


def render_markdown(results: dict, command: str) -> str:
    lines = [BEGIN, "## Jobs in a bucket: what the driver carries", "",
             f"`{command}` — {results['date']}; {results['machine']}; a local Ray with {results['workers']} one-thread "
             f"CPU workers and a SeaweedFS S3 server on the same machine; `{results['clip']}` (1280×720, 50 frames, "
             "as shot) at full size; first VGG layer only, 2 evaluations per frame (the driver's work does not depend "
             "on the optimization). Per render: bytes of the task sent and of the result received (pickled, as Ray "
             "ships them), bytes the render loop reads and writes in the job's store, its CPU (the driver thread's, "
             "the live page's rewrites apart); once per job, the CPU that sets the render up (the pool's start, the "
             "weights and Grams put in Ray's object store); per output frame: what the decode writes and the encode "
             "beside the render reads (still on the head).", "",
             "| job in | renders | task (B) | result (B) | render loop's store I/O (B) | render loop CPU per render (ms) "
             "| render setup CPU, once (ms) | page rewrites | page I/O per rewrite (B) | page CPU per rewrite (ms) "
             "| decode writes (B/frame) | encode reads (B/frame) | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['where']} | {r['renders']} | {r['task_bytes']:,} | {r['result_bytes']:,} | "
                     f"{r['render_store_bytes']:,} | {r['render_cpu_ms']} | {r['setup_cpu_ms']:,} | "
                     f"{r['page_writes']} | {r['page_bytes']:,} | {r['page_cpu_ms']} | {r['decode_written_bytes']:,} | "
                     f"{r['encode_read_bytes']:,} | {r['wall_s']} |")
    lines += ["", f"Wall time, bucket against folder: **{results['wall_ratio']}×**.", ""]
    if results.get("busy"):
        lines += [f"The render loop kept busy (the same job at {BUSY_SIZE} px, so frames come back as fast as the "
                  "loop turns, as from GPUs; at 720p its polls every 2 s while frames render are shared out among "
                  "few renders): its CPU per render, the page's rewrites apart.", "",
                  "| job in | renders | wall (s) | render loop CPU per render (ms) | store client's thread CPU per "
                  "render (ms) | task (B) | result (B) |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['where']} | {r['renders']} | {r['wall_s']} | {r['render_cpu_ms']} | {r['client_cpu_ms']} | "
                  f"{r['task_bytes']:,} | {r['result_bytes']:,} |" for r in results["busy"]]
        lines += ["", "The store client's thread (fsspec's event loop: request signing, HTTP) serves every store call "
                  "of the driver process while the loop runs: the loop's records, the lease's renewals and the reads "
                  "of the encode beside the render; all of it is counted here."]
    lines += [END, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--busy-only", action="store_true",
                        help="measure only the busy loop (128 px); keep the stored full-size rows")
    args = parser.parse_args(argv)
    results = measure(args.frames, args.workers, json.loads(RESULTS.read_text()) if args.busy_only else None)
    RESULTS.write_text(json.dumps(results, indent=1))
    block = render_markdown(results, "python -m benchmarks.storage")
    print(block)
    if not args.no_write:
        from benchmarks.suite import write_benchmarks

        write_benchmarks(block, ROOT / "BENCHMARKS.md", BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
