"""Chaos: run a video job on Ray while killing worker processes at random moments, and
compare every frame with an uninterrupted run of the same job.

    python benchmarks/chaos.py --rounds 10

Prints one JSON report: rounds, kills, frames redone, frames lost (missing or different from
the uninterrupted run: must be 0), frames rendered twice, and whether the videos are identical.
A short version runs in the test suite (tests/test_chaos.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings
from ray_style.runner import stylize_video

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = VideoSettings(style=StyleSettings(size=32, iters=30, content_weight=1.0, style_weight=1e3),
                         segment_length=5, overlap=2)


def _frames(job_dir: Path) -> dict:
    return {str(p.relative_to(job_dir)): p.read_bytes() for p in sorted((job_dir / "chains").rglob("*.png"))}


def _actor_pids(log: Path) -> list[int]:
    """Processes of this job's frame actors that are still alive, as its log names them
    (``host/node:pid``): only what this run started is ever killed."""
    pids = set()
    for line in log.read_text().splitlines():
        try:
            pids.add(int(json.loads(line)["worker"].rsplit(":", 1)[1]))
        except (ValueError, KeyError, IndexError):
            continue
    return sorted(pid for pid in pids if Path(f"/proc/{pid}").exists())


def chaos(workdir, rounds: int, clip=ROOT / "tests/data/bunny_12f.mp4", style=ROOT / "samples/starry_night.jpg",
          settings: VideoSettings = SETTINGS, seed: int = 0, max_pause: float = 1.5) -> dict:
    """Run the reference job, then the same job under ``rounds`` random worker kills."""
    workdir = Path(workdir)
    rng = random.Random(seed)
    common = dict(weights="random", executor=ExecutorOptions(max_workers=2, threads=1), report=False)
    started = time.perf_counter()
    reference = stylize_video(clip, [style], workdir / "reference.mp4", settings, **common)
    reference_seconds = time.perf_counter() - started

    log = workdir / "chaos.job" / "frames.jsonl"
    kills, attempts, result = [], [0], {}

    def job():
        result["value"] = stylize_video(clip, [style], workdir / "chaos.mp4", settings, **common)

    thread = threading.Thread(target=job)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive() and not (log.exists() and log.read_text()):  # kills start once workers render
        time.sleep(0.05)
    for _ in range(rounds):
        thread.join(rng.uniform(0.1, max_pause))
        if not thread.is_alive():
            break
        attempts[0] += 1
        pids = _actor_pids(log)
        if pids:
            victim = rng.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)
            except ProcessLookupError:  # already restarted with a new pid
                pass
    thread.join()
    chaos_seconds = time.perf_counter() - started
    if "value" not in result:
        raise RuntimeError("the chaos job failed; see the Ray logs")
    chaotic = result["value"]
    want, got = _frames(reference.job_dir), _frames(chaotic.job_dir)
    lost = sorted(name for name in want if got.get(name) != want[name])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    keys = [(r["chain"], r["frame"]) for r in records]
    return {
        "rounds": rounds, "kill_attempts": attempts[0], "kills": len(kills), "frames_redone": chaotic.redone,
        "frames_lost": len(lost), "lost": lost[:10], "renders": len(want),
        "rendered_twice": len(keys) - len(set(keys)),
        "videos_identical": Path(reference.output).read_bytes() == Path(chaotic.output).read_bytes(),
        "reference_seconds": round(reference_seconds, 1), "chaos_seconds": round(chaos_seconds, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=SETTINGS.style.iters)
    args = parser.parse_args(argv)
    import dataclasses

    import ray

    settings = dataclasses.replace(SETTINGS, style=dataclasses.replace(SETTINGS.style, iters=args.iters))
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(chaos(workdir, args.rounds, settings=settings, seed=args.seed), indent=1))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
