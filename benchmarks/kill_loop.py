"""kill -9 at random moments, again and again, until the job finishes: the result must be the
same bytes as an uninterrupted run, with no temp file left behind.

    python -m benchmarks.kill_loop --kills 20          # writes benchmarks/results_kill_loop.json

Each round starts `ray-style video … --init flow` (the in-process executor, so the kill takes
the driver and its renderer down together, mid-write as often as not), waits a random time,
and sends SIGKILL. After the kills, the same command runs to the end. Everything the kills
interrupted — a frame PNG half written, a record cut short, the encode — must be repaired or
redone by the re-runs alone.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMP = re.compile(r"^\..+\.[0-9a-f]{8}(\.[A-Za-z0-9]+)?$")


def command(out: Path, clip: Path, style: Path) -> list[str]:
    return [sys.executable, "-m", "ray_style.cli", "video", str(clip), str(style), "-o", str(out), "--init", "flow",
            "--size", "32", "--iters", "60", "--content-weight", "1", "--style-weight", "1e3", "--segment-length",
            "6", "--overlap", "2", "--weights", "random", "--executor", "local", "--threads", "2", "--no-report",
            "-q"]


def frames(job_dir: Path) -> dict:
    return {str(p.relative_to(job_dir)): p.read_bytes() for p in sorted((job_dir / "chains").rglob("*.png"))}


def temps(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob(".*") if p.is_file() and TEMP.match(p.name)]


def kill_loop(workdir: Path, kills: int, seed: int = 0, clip=ROOT / "tests/data/bunny_12f.mp4",
              style=ROOT / "samples/starry_night.jpg") -> dict:
    workdir = Path(workdir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(seed)
    started = time.perf_counter()
    subprocess.run(command(workdir / "whole.mp4", clip, style), check=True, env=env, timeout=900)
    whole_seconds = time.perf_counter() - started
    killed, moments = 0, []
    out = workdir / "killed.mp4"
    for _ in range(kills):
        process = subprocess.Popen(command(out, clip, style), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        # Start-up (imports, checking the job directory) takes ~3 s here: kill after it, while
        # frames, records, flows or the encode are being written.
        moment = rng.uniform(2.5, 8.0)
        try:
            process.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed += 1
            moments.append(round(moment, 2))
        if out.exists():
            break  # it finished before the kill: the rest of the kills have nothing to hit
    finish = subprocess.run(command(out, clip, style), env=env, timeout=900, capture_output=True, text=True)
    job = workdir / "killed.job"
    events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()] \
        if (job / "events.jsonl").exists() else []
    return {
        "kills": killed, "kill_moments_s": moments, "uninterrupted_s": round(whole_seconds, 1),
        "final_exit": finish.returncode, "frames_identical": frames(job) == frames(workdir / "whole.job"),
        "video_identical": out.read_bytes() == (workdir / "whole.mp4").read_bytes(),
        "temp_files_left": temps(job, workdir),
        "repairs": sum(1 for e in events if e.get("kind") == "repaired"),
        "warnings": sum(1 for e in events if e.get("kind") == "warning"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        report = kill_loop(Path(work), args.kills, args.seed)
    print(json.dumps(report, indent=1))
    (ROOT / "benchmarks" / "results_kill_loop.json").write_text(json.dumps(report, indent=1))
    ok = report["frames_identical"] and report["video_identical"] and not report["temp_files_left"]
    return 0 if ok and report["final_exit"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
