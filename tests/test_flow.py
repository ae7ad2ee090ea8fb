import numpy as np

from ray_style import flow, video
from tests.conftest import DATA


def textured(height=48, width=64, seed=0):
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def test_flow_of_a_shift_and_warping_back():
    a = textured()
    b = np.roll(a, 3, axis=1)  # content moves 3 px right
    forward, backward = flow.optical_flow(a, b), flow.optical_flow(b, a)
    assert abs(np.median(forward[..., 0]) - 3) < 0.3 and abs(np.median(forward[..., 1])) < 0.3
    mask = flow.reliability(forward, backward)
    restored = flow.warp(b, forward)  # b brought back into a's geometry
    inner = (slice(4, -4), slice(6, -6))
    assert np.abs(restored[inner].astype(int) - a[inner]).mean() < 6
    assert mask[inner].mean() > 0.8
    assert flow.warping_error(a, b, forward, mask) < 0.1 * flow.warping_error(a, b, np.zeros_like(forward), mask)


def test_unreliable_regions_come_from_the_content():
    previous, content = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1
    start = flow.flow_init(previous, content, np.zeros((8, 8, 2), np.float32), mask)
    assert (start[:, :4] == 0).all() and (start[:, 4:] == 200).all()


def test_real_clip_flow_explains_motion():
    info = video.probe(DATA / "bikes_cut.mp4")
    frames = list(video.decode(info, info.width, info.height))
    a, b = frames[2], frames[3]
    forward = flow.optical_flow(a, b)
    mask = flow.reliability(forward, flow.optical_flow(b, a))
    assert flow.warping_error(a, b, forward, mask) < flow.warping_error(a, b, np.zeros_like(forward), mask)
