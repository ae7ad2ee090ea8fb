"""A model, from measured numbers, of one feature film on 8, 64, 256 and 512 GPUs.

    python -m benchmarks.scale_model            # measure the per-frame driver costs here, then model
    python -m benchmarks.scale_model --rewrite  # re-render BENCHMARKS.md from the stored measurements

The "bucket" rows take the driver's bytes and CPU per render from benchmarks/storage.py's
measurement (results_storage_cpu.json): the job in a bucket, the workers moving the frames.

The film: 2 hours at 24 fps (172,800 frames), 1920×1080, the default video settings (chains of
48 frames with 4-frame cross-faded lead-ins, 150 evaluations per seeded frame, 300 per chain
start, --init flow). Inputs:

- GPU time per frame: the 512² H100 figures scaled by area (×7.91 for 1080p) and evaluations:
  4.5 s per 500 evaluations as measured on an H100 (BENCHMARKS.md), 1.0 s as the goal.
- What each task moves, measured here on the sample clip's frames scaled to 1080p: the
  content frame's PNG, the previous stylized frame's PNG and the result's PNG (stylized frames
  are textured: their PNG size per pixel is measured on a stylized frame) — frames travel
  as the PNG files the job directory keeps, not as raw pixels.
- The driver's CPU per frame: reading, hashing and writing those files; decoding the film
  once (ffmpeg, PNG writes on a thread per core) before rendering; blending and encoding at
  the end. The optical flow (two DIS flows per frame and their consistency check) is the
  workers' work, on their own CPUs, before each frame's optimization.
- "landed": the same model for the design before this change — raw pixels in transit (the
  content, start and warped frames and the mask out, the result back), two PNG decodes and an
  encode per frame on the driver, every flow computed by the driver before rendering, a
  one-thread decode.

- "workers": the job in a bucket (as "bucket") with the stages where they now run: the head
  probes the film's packets and CPU tasks on the GPU nodes decode it in segments, in parallel
  (:data:`WORKER_CPUS` vCPUs per GPU, one of them the actor's); each GPU worker has two calls in
  flight, so its flows, PNG decodes and encode overlap the optimization (a frame costs the
  longer of the two, not their sum). The output is encoded in spans of 240 frames by one-thread
  CPU tasks on the GPU nodes' vCPUs the actors leave, each as soon as its frames are final; the
  head only joins the parts (a stream copy: the parts read from the bucket). The "ideal" column:
  the film's GPU work over the GPUs plus the first chain's latency.

Outputs per GPU count: makespan, GPU utilization (the tail where fewer chains than GPUs remain),
the driver's network bytes/s in and out, the driver's CPU cores busy, the encode's length and
how much of it is left when the render ends (all of it as landed; now the output is encoded
beside the render, so only the last wave's frames), and the head's disk.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results_scale_model.json"
STORAGE = ROOT / "benchmarks" / "results_storage_cpu.json"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
FILM_FRAMES, FILM_FPS, WIDTH, HEIGHT = 2 * 3600 * 24, 24, 1920, 1080
AREA_FACTOR = WIDTH * HEIGHT / 512**2
SEGMENT, OVERLAP, ITERS = 48, 4, 150
GPU_SECONDS_PER_500 = {"today": 4.5, "goal": 1.0}  # a 512² frame on one H100 (BENCHMARKS.md)
HEAD_CORES = {"landed": 4, "now": 16, "bucket": 16}  # the head in cluster/: m6i.xlarge before, c6i.4xlarge now
MEASURED_CORES = 2  # this machine: decode and x264 used both
SCALING = 0.75  # what more cores give ffmpeg's decoder and x264 (frame threads), per core
WORKER_FLOW_SPEEDUP = 2.5  # OpenCV's DIS on a GPU node's 4 vCPUs against one core
NIC_BYTES = 10e9 / 8  # a 10 Gb/s head
WORKER_CPUS = 4  # vCPUs per GPU on the clusters in cluster/ (g5/p4-class nodes)
SPAN = 240  # output frames per encode task (ray_style.spans.SPAN)


def _timed(function, repeats=3):
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def measure() -> dict:
    """Per-frame costs at 1080p on this machine (one core each)."""
    import cv2

    from ray_style import codec, flow, video

    cv2.setNumThreads(1)
    info = video.probe(ROOT / "samples" / "bigbuckbunny_2s.mp4")
    started = time.perf_counter()
    frames = []
    for frame in video.decode(info, WIDTH, HEIGHT):
        frames.append(frame.copy())
        if len(frames) == 8:
            break
    decode = (time.perf_counter() - started) / len(frames)
    source = frames[4]
    # A stylized frame's texture: the sample painting tiled over a frame stands in for one.
    from ray_style.images import load_image, resize

    painting = resize(load_image(ROOT / "samples" / "starry_night.jpg"), WIDTH, HEIGHT)
    stylized = (0.5 * source + 0.5 * painting).astype(np.uint8)
    encode_source, source_png = _timed(lambda: codec.png_bytes(source))
    encode_stylized, stylized_png = _timed(lambda: codec.png_bytes(stylized))
    decode_png, _ = _timed(lambda: codec.decode_png(stylized_png))
    digest, _ = _timed(lambda: codec.digest(stylized_png))
    dis, forward = _timed(lambda: flow.optical_flow(frames[5], frames[4]), repeats=2)
    backward = flow.optical_flow(frames[4], frames[5])
    check, mask = _timed(lambda: flow.reliability(forward, backward))
    from ray_style.codec import flow_bytes

    flow_file = flow_bytes(forward, mask)
    return {
        "date": str(date.today()), "frame": [WIDTH, HEIGHT], "source": "samples/bigbuckbunny_2s.mp4 scaled to 1080p",
        "decode_s": decode, "png_source_bytes": len(source_png), "png_stylized_bytes": len(stylized_png),
        "png_encode_s": (encode_source + encode_stylized) / 2, "png_decode_s": decode_png, "sha256_s": digest,
        "dis_flow_s": dis, "reliability_s": check, "flow_file_bytes": len(flow_file),
        **_x264(frames[:8]),
    }


def _x264(frames) -> dict:
    import tempfile
    from fractions import Fraction

    from ray_style import video

    with tempfile.TemporaryDirectory() as folder:
        many = frames * 4
        started = time.perf_counter()
        written = video.encode(iter(many), Path(folder) / "x.mp4", WIDTH, HEIGHT, Fraction(24))
        fps = len(many) / (time.perf_counter() - started)
        started = time.perf_counter()  # a span's part, as a task encodes it: x264 on one thread
        video.encode_part(iter(many), Path(folder) / "x.nut", WIDTH, HEIGHT, Fraction(24))
        return {"x264_fps": fps, "x264_bytes_per_frame": written.stat().st_size / len(many),
                "x264_one_thread_fps": len(many) / (time.perf_counter() - started)}


def model(measured: dict, gpus: int, speed: str, design: str = "now", storage: dict | None = None) -> dict:
    """The film on ``gpus`` one-GPU workers at ``speed`` ("today" or "goal"), as ray_style
    works with the job on the head's disk (``now``), with the job in a bucket and the workers
    moving the frames (``bucket``: the driver's costs per render from ``storage``), or as it
    had ``landed`` before (raw pixels in transit, flows and PNG work on the driver, a one-thread
    decode)."""
    seeded = GPU_SECONDS_PER_500[speed] * AREA_FACTOR * ITERS / 500
    chains = math.ceil(FILM_FRAMES / SEGMENT)
    renders_per_chain = SEGMENT + OVERLAP  # the lead-in frames are rendered by both chains
    renders = chains * renders_per_chain
    cores = HEAD_CORES["bucket" if design == "workers" else design]
    speedup = 1 + (cores / MEASURED_CORES - 1) * SCALING  # ffmpeg's decoder and x264 on the head's cores
    flow_cpu = 2 * measured["dis_flow_s"] + 2 * measured["reliability_s"]  # two flows and their checks
    if design == "landed":
        chain_seconds = (renders_per_chain - 1) * seeded + 2 * seeded  # a chain start takes 2x the evaluations
        raw = WIDTH * HEIGHT * 3
        out_bytes, in_bytes = 3 * raw + WIDTH * HEIGHT, raw  # content, start, warped target and mask; result
        # Per render on the driver: two PNG decodes for the task, one PNG encode of the result;
        # every flow computed by the driver before rendering, and a one-thread PNG write.
        per_render_cpu = 2 * measured["png_decode_s"] + measured["png_encode_s"]
        decode_s = FILM_FRAMES * (measured["decode_s"] / speedup + measured["png_encode_s"]) \
            + FILM_FRAMES * flow_cpu / cores
        encode_s = FILM_FRAMES * (1 / (measured["x264_fps"] * speedup) + measured["png_decode_s"])
    elif design in ("bucket", "workers"):
        chain_seconds = (renders_per_chain - 1) * (seeded + flow_cpu / WORKER_FLOW_SPEEDUP) + 2 * seeded
        # Per render the driver sends a task naming its inputs and receives a record; the
        # workers move the frames. Beside the render, the encode reads each final frame back
        # from the bucket (counted per render below, with the renders' rate), and the decode
        # before it writes every source frame there.
        out_bytes = storage["task_bytes"] + storage["render_store_bytes"]
        in_bytes = storage["result_bytes"] + measured["png_stylized_bytes"] * FILM_FRAMES / (
            math.ceil(FILM_FRAMES / SEGMENT) * (SEGMENT + OVERLAP))
        per_render_cpu = storage["render_cpu_ms"] / 1000
        decode_s = FILM_FRAMES * max(measured["decode_s"] / speedup, measured["png_encode_s"] / cores,
                                     measured["png_source_bytes"] / NIC_BYTES)
        encode_s = FILM_FRAMES * max(1 / (measured["x264_fps"] * speedup),
                                     (measured["png_decode_s"] + measured["sha256_s"]) / cores)
        if design == "workers":
            # Segments decoded by CPU tasks over the GPU nodes' free vCPUs (one core each: ffmpeg's
            # decode and the PNG writes), the head probing packets only.
            decode_s = FILM_FRAMES * (measured["decode_s"] + measured["png_encode_s"]) / (gpus * (WORKER_CPUS - 1))
            # Two calls in flight: a seeded frame costs the longer of its optimization and its CPU
            # part (two flows and their check, three PNG decodes, the result's encode).
            cpu_part = flow_cpu / WORKER_FLOW_SPEEDUP + 3 * measured["png_decode_s"] + measured["png_encode_s"]
            chain_seconds = (renders_per_chain - 1) * max(seeded, cpu_part) + 2 * seeded
            # The output in spans of SPAN frames, each encoded by a one-thread CPU task on a GPU
            # node (x264 on one core, the frames read back and checked) as soon as its frames
            # are final, on the vCPUs the actor's own CPU part leaves (one stays the actor's).
            busy = (flow_cpu + 3 * measured["png_decode_s"] + measured["png_encode_s"]) / max(seeded, cpu_part)
            spare = max(WORKER_CPUS - 1 - busy, 0.25)
            encode_core_s = encode_frame_core_s(measured)
            encode_s = FILM_FRAMES * encode_core_s / (gpus * spare)
            # The head reads the parts (x264's bytes), not every final frame's PNG.
            in_bytes = storage["result_bytes"] + measured["x264_bytes_per_frame"] * FILM_FRAMES / renders
    else:
        # A seeded frame's worker first computes its two flows (and their check) on its own
        # CPUs: 4 vCPUs per GPU on the clusters in cluster/, about 2.5x one core's speed for DIS.
        chain_seconds = (renders_per_chain - 1) * (seeded + flow_cpu / WORKER_FLOW_SPEEDUP) + 2 * seeded
        # Network: a task carries the content frame, the previous stylized frame and the
        # previous source frame (for the flow) as the job's PNG files; back come the result and
        # the flow the report will use.
        out_bytes = 2 * measured["png_source_bytes"] + measured["png_stylized_bytes"]
        in_bytes = measured["png_stylized_bytes"] + measured["flow_file_bytes"]
        # The driver per render: read and hash three files, write two (the work is I/O, not pixels).
        per_render_cpu = 5 * measured["sha256_s"]
        # Before rendering: ffmpeg decodes the film once while a thread per head core writes
        # PNGs; after it, a thread per core reads, checks and blends frames ahead of x264.
        decode_s = FILM_FRAMES * max(measured["decode_s"] / speedup, measured["png_encode_s"] / cores)
        encode_s = FILM_FRAMES * max(1 / (measured["x264_fps"] * speedup),
                                     (measured["png_decode_s"] + measured["sha256_s"]) / cores)
    waves = math.ceil(chains / gpus)
    render_s = waves * chain_seconds  # the last round is partial: GPUs idle in the tail
    start_s = decode_s  # the render waits for the whole decode
    if design == "workers":
        # The render starts on the film's opening while the rest decodes (runner.decode): a
        # chain is known two pieces after its start (plan.Settled) and the decode goes front to
        # back at its rate, so every GPU of the first wave has a chain once the decode reaches
        # (GPUs + 2) pieces; the render then ends no earlier than one chain after the decode.
        start_s = min(decode_s, (min(gpus, chains) + 2) * SEGMENT * decode_s / FILM_FRAMES)
    gpu_busy = chains * renders_per_chain * seeded / (gpus * render_s)
    frames_per_s = renders / render_s
    driver_cores = frames_per_s * per_render_cpu
    # The driver sets the pace when it needs more cores than the head has, or more than its NIC.
    limit = min(1.0, cores / driver_cores) if driver_cores else 1.0
    nic = frames_per_s * (out_bytes + in_bytes) / NIC_BYTES
    limit = min(limit, 1.0 / nic) if nic > 1 else limit
    if design == "landed":
        after_render_s = encode_s  # the encode started when the last frame was done
    elif design == "workers":
        # Spans go to the cluster's CPUs as their frames become final (a wave's when it ends,
        # counted conservatively); the last span takes SPAN frames on one core after the render;
        # then the head joins the parts: reads them from the bucket (its NIC) and stream-copies.
        rate, finished = FILM_FRAMES / encode_s, 0.0
        for wave in range(waves):
            frames = min(gpus, chains - wave * gpus) * SEGMENT
            finished = max(finished, (wave + 1) * chain_seconds / limit) + frames / rate
        finished = max(finished, render_s / limit + SPAN * encode_frame_core_s(measured))
        join_s = FILM_FRAMES * measured["x264_bytes_per_frame"] / NIC_BYTES
        after_render_s = finished - render_s / limit + join_s
    else:
        # The encode runs beside the render, each frame once final. Chains start earliest first,
        # in waves of one chain per GPU; counted conservatively, a wave's frames reach x264 only
        # when the wave ends, and x264 takes them at its measured rate (the driver's own work
        # needs under one of the head's cores, so x264 keeps the rest).
        rate, finished = FILM_FRAMES / encode_s, 0.0
        for wave in range(waves):
            frames = min(gpus, chains - wave * gpus) * SEGMENT
            finished = max(finished, (wave + 1) * chain_seconds / limit) + frames / rate
        after_render_s = finished - render_s / limit
    disk = FILM_FRAMES * (measured["png_source_bytes"] + measured["flow_file_bytes"]) \
        + renders * measured["png_stylized_bytes"]
    if design in ("bucket", "workers"):  # the job is in the bucket: the head keeps a temp copy of the output
        disk = FILM_FRAMES * measured.get("x264_bytes_per_frame", 0)
    # The bound no schedule beats: every render's GPU time over the GPUs, plus one chain's latency.
    ideal_s = (chains * ((renders_per_chain - 1) * seeded + 2 * seeded)) / gpus + chain_seconds
    return {"gpus": gpus, "speed": speed, "design": design, "seconds_per_seeded_frame": round(seeded, 2),
            "ideal_h": round(ideal_s / 3600, 2),
            "makespan_h": round((max(start_s + render_s / limit, decode_s + chain_seconds) + after_render_s) / 3600,
                                2),
            "render_h": round(render_s / limit / 3600, 2), "decode_h": round(decode_s / 3600, 2),
            "first_frame_min": round((start_s + 2 * seeded) / 60, 1),  # a chain's first frame takes 2x the evaluations
            "gpu_utilization": round(gpu_busy * limit, 3), "frames_per_s": round(frames_per_s * limit, 2),
            "demand_frames_per_s": frames_per_s,  # what the GPUs could render were the head not in the way
            "driver_out_MBps": round(frames_per_s * limit * out_bytes / 1e6, 1),
            "driver_in_MBps": round(frames_per_s * limit * in_bytes / 1e6, 1),
            "nic_share": round(nic * limit, 3), "driver_cores": round(driver_cores * limit, 2),
            "driver_bound": limit < 1, "encode_h": round(encode_s / 3600, 2),
            "after_render_min": round(after_render_s / 60, 1),
            "head_disk_TB": round(disk / 1e12, 2)}


def encode_frame_core_s(measured: dict) -> float:
    """Core-seconds a span task spends on one output frame: x264 on one thread (measured) and
    the frame's PNG read back and checked."""
    return 1 / measured["x264_one_thread_fps"] + measured["png_decode_s"] + measured["sha256_s"]


def head_limit(measured: dict, storage: dict, speed: str = "goal") -> dict:
    """The fewest GPUs at which the head sets the pace (its cores or its NIC) with the job in
    a bucket, and the same for its render loop alone (tasks and records, the encode aside)."""
    def first(check) -> int | None:
        for gpus in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            if check(gpus):
                return gpus
        return None

    whole = first(lambda g: model(measured, g, speed, "bucket", storage)["driver_bound"])
    loop = first(lambda g: _render_loop_bound(measured, g, speed, storage))
    return {"whole_head": whole, "render_loop": loop}


def _render_loop_bound(measured: dict, gpus: int, speed: str, storage: dict) -> bool:
    """Whether the render loop alone (no decode or encode on the head) would set the pace."""
    demand = model(measured, gpus, speed, "bucket", storage)["demand_frames_per_s"]
    cpu = demand * storage["render_cpu_ms"] / 1000
    nic = demand * (storage["task_bytes"] + storage["result_bytes"] + storage["render_store_bytes"])
    return cpu > HEAD_CORES["bucket"] or nic > NIC_BYTES


def render_markdown(measured: dict, rows: list[dict], command: str, limits: dict | None = None) -> str:
    lines = [BEGIN, "## Scale model: a 2-hour film at 1080p (24 fps) on 8, 64, 256 and 512 GPUs", "",
             f"`{command}` — {measured['date']}. Per-frame costs measured on this machine (one core each, "
             f"{measured['source']}): PNG {measured['png_source_bytes'] / 1e6:.2f} MB per source frame, "
             f"{measured['png_stylized_bytes'] / 1e6:.2f} MB per stylized frame; one DIS flow "
             f"{measured['dis_flow_s']:.2f} s, its check {measured['reliability_s']:.2f} s, a flow file "
             f"{measured['flow_file_bytes'] / 1e6:.2f} MB; decode {measured['decode_s'] * 1000:.0f} ms per frame; "
             f"x264 {measured['x264_fps']:.1f} frames/s. GPU time: the 512² H100 frame scaled by area "
             f"(×{AREA_FACTOR:.2f}) and by 150/500 evaluations. Head: 10 Gb/s, {HEAD_CORES['landed']} cores as "
             f"landed, {HEAD_CORES['now']} now (decode and x264 scaled from this machine's {MEASURED_CORES} cores "
             f"at {SCALING:.0%} per added core).", "",
             "| design | GPUs | GPU speed | s per seeded frame | decode (h) | first frame (min) | render (h) | "
             "makespan (h) | ideal (h) | "
             "GPU busy | frames/s | driver out MB/s | driver in MB/s | NIC share | driver cores | driver-bound | "
             "encode (h) | left after the render (min) | head disk (TB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['design']} | {r['gpus']} | {r['speed']} | {r['seconds_per_seeded_frame']} | {r['decode_h']} | "
                     f"{r['first_frame_min']} | {r['render_h']} | {r['makespan_h']} | {r['ideal_h']} | "
                     f"{r['gpu_utilization']:.0%} | "
                     f"{r['frames_per_s']} | "
                     f"{r['driver_out_MBps']} | {r['driver_in_MBps']} | {r['nic_share']:.0%} | "
                     f"{r['driver_cores']} | {'yes' if r['driver_bound'] else 'no'} | {r['encode_h']} | "
                     f"{r['after_render_min']} | {r['head_disk_TB']} |")
    if limits:
        lines += ["", "With the job in a bucket (the `bucket` rows: the driver's bytes per render from "
                  "benchmarks/storage.py, its CPU per render from the same run kept busy — the loop's thread and "
                  "the store client's thread together), at goal speed the head sets the pace from "
                  f"**{limits['whole_head'] or 'more than 65,536'} GPUs** on, because it still decodes the film and "
                  "reads every final frame back to encode it; its render loop alone (tasks, records, the page) "
                  f"would from **{limits['render_loop'] or 'more than 65,536'} GPUs**."]
    lines += [END, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewrite", action="store_true", help="use the stored measurements")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    measured = json.loads(RESULTS.read_text())["measured"] if args.rewrite else measure()
    storage = _storage_row()
    designs = ("landed", "now", "bucket", "workers") if storage else ("landed", "now")
    rows = [model(measured, gpus, speed, design, storage) for design in designs for speed in ("today", "goal")
            for gpus in (8, 64, 256, 512)]
    limits = head_limit(measured, storage) if storage else None
    RESULTS.write_text(json.dumps({"measured": measured, "rows": rows, "limits": limits}, indent=1))
    block = render_markdown(measured, rows, "python -m benchmarks.scale_model", limits)
    print(block)
    if not args.no_write:
        from benchmarks.suite import write_benchmarks

        write_benchmarks(block, ROOT / "BENCHMARKS.md", BEGIN, END)
    return 0


def _storage_row() -> dict | None:
    """The bucket run of benchmarks/storage.py, when it has been measured: its bytes per render
    from the full-size run, its CPU per render from the busy one (frames back as fast as the
    loop turns), the loop's thread and the store client's thread together."""
    if not STORAGE.exists():
        return None
    results = json.loads(STORAGE.read_text())
    rows = [r for r in results["rows"] if r["where"] == "bucket"]
    busy = [r for r in results.get("busy", []) if r["where"] == "bucket"]
    if not rows:
        return None
    row = dict(rows[0])
    if busy:
        row["render_cpu_ms"] = busy[0]["render_cpu_ms"] + busy[0].get("client_cpu_ms", 0.0)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
