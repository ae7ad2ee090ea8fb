import struct

import numpy as np
import pytest

from ray_style import flow, video
from ray_style.errors import InputError
from tests.conftest import DATA


def textured(height=48, width=64, seed=0):
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def constant_flow(dx, dy, height=40, width=50):
    return np.broadcast_to(np.array([dx, dy], np.float32), (height, width, 2)).copy()


@pytest.mark.parametrize("method", flow.FLOW_METHODS)
def test_flow_of_a_shift_and_warping_back(method):
    a = textured()
    b = np.roll(a, 3, axis=1)  # content moves 3 px right
    forward, backward = flow.optical_flow(a, b, method), flow.optical_flow(b, a, method)
    assert forward.shape == (48, 64, 2) and forward.dtype == np.float32
    assert abs(np.median(forward[..., 0]) - 3) < 0.3 and abs(np.median(forward[..., 1])) < 0.3
    mask = flow.reliability(forward, backward)
    restored = flow.warp(b, forward)  # b brought back into a's geometry
    inner = (slice(4, -4), slice(6, -6))
    assert np.abs(restored[inner].astype(int) - a[inner]).mean() < 6
    assert mask[inner].mean() > 0.8
    assert flow.warping_error(a, b, forward, mask) < 0.1 * flow.warping_error(a, b, np.zeros_like(forward), mask)


def test_unknown_flow_method_lists_the_choices():
    with pytest.raises(InputError, match="dis, farneback.*Did you mean 'farneback'"):
        flow.optical_flow(textured(), textured(), "farnback")


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


def test_two_translations_compose_to_their_sum():
    composed = flow.compose(constant_flow(2, 1), constant_flow(-1.5, 3))
    np.testing.assert_allclose(composed, constant_flow(0.5, 4), atol=1e-5)


def test_composition_follows_the_path():
    height, width = 40, 50
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    zoom = np.stack([0.1 * grid_x, 0.05 * grid_y], -1)  # a → b: x ↦ 1.1 x, y ↦ 1.05 y
    # b → c: a flow that varies with position, so sampling it at the wrong place shows
    second = np.stack([0.2 * grid_y, np.zeros_like(grid_y)], -1)
    composed = flow.compose(zoom, second)
    expected = np.stack([0.1 * grid_x + 0.2 * 1.05 * grid_y, 0.05 * grid_y], -1)
    inner = (slice(0, 30), slice(0, 40))  # where the path stays inside b
    # cv2.remap interpolates on a 1/32-px grid: 0.2 px of flow per px, off by ≤ 1/64 px
    np.testing.assert_allclose(composed[inner], expected[inner], atol=0.2 / 64 + 1e-4)


def test_a_flow_composed_with_its_inverse_is_nearly_zero():
    a = textured(64, 80)
    b = np.roll(np.roll(a, 4, axis=1), -2, axis=0)
    forward, backward = flow.optical_flow(a, b), flow.optical_flow(b, a)
    round_trip = flow.compose(forward, backward)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(forward[inner]).mean() > 2  # the flows are far from zero …
    assert np.abs(round_trip[inner]).mean() < 0.3  # … their round trip is not


def test_composed_reliability_samples_each_hop_along_the_path():
    flow_ab, flow_bc = constant_flow(4, 0), constant_flow(1, 0)
    mask_ab, mask_bc = np.ones((40, 50), np.float32), np.ones((40, 50), np.float32)
    mask_bc[:, 20:24] = 0  # occluded in b
    mask_ab[5, 5] = 0  # occluded in the first hop
    mask = flow.compose_reliability(flow_ab, mask_ab, flow_bc, mask_bc)
    assert (mask[:, 16:20] == 0).all()  # a's pixels that pass through b's columns 20…23
    assert (mask[:, 24:28] == 1).all() and mask[5, 5] == 0 and mask[6, 5] == 1
    assert (mask[:, 45:] == 0).all()  # x + 5 leaves c
    path_flow, path_mask = flow.compose_path([flow_ab, flow_bc], [mask_ab, mask_bc])
    np.testing.assert_allclose(path_flow, constant_flow(5, 0))
    np.testing.assert_array_equal(path_mask, mask)
    steps = list(flow.composed_paths([flow_ab, flow_bc, constant_flow(0, 2)], [mask_ab, mask_bc, mask_ab]))
    assert [tuple(path[20, 10]) for path, _ in steps] == [(4, 0), (5, 0), (5, 2)]
    single_flow, single_mask = flow.compose_path([flow_ab], [mask_ab])
    assert (single_mask[:, 46:] == 0).all() and single_mask[:, :46].sum() == 40 * 46 - 1


def test_composed_flow_explains_motion_over_several_frames():
    info = video.probe(DATA / "bikes_cut.mp4")
    frames = list(video.decode(info, info.width, info.height))[:4]
    pairs = [flow.reliable_flow(frames[i], frames[i + 1]) for i in range(3)]
    path, mask = flow.compose_path([f for f, _ in pairs], [m for _, m in pairs])
    assert 0.2 < mask.mean() < 1
    moved = flow.warping_error(frames[0], frames[3], path, mask)
    assert moved < 0.7 * flow.warping_error(frames[0], frames[3], np.zeros_like(path), mask)


def test_long_term_masks_exclude_what_a_closer_frame_explains():
    one = np.array([[1, 1, 0, 0, 0]], np.float32)
    two = np.array([[1, 0, 1, 0, 0.5]], np.float32)
    five = np.array([[1, 1, 1, 1, 1]], np.float32)
    masks = flow.long_term_masks({5: five, 1: one, 2: two})
    assert list(masks) == [1, 2, 5]
    np.testing.assert_array_equal(masks[1], one)
    np.testing.assert_array_equal(masks[2], [[0, 0, 1, 0, 0.5]])
    np.testing.assert_array_equal(masks[5], [[0, 0, 0, 1, 0.5]])


def test_flo_round_trip(tmp_path):
    field = np.random.default_rng(0).normal(size=(7, 9, 2)).astype(np.float32)
    flow.write_flo(tmp_path / "a.flo", field)
    raw = (tmp_path / "a.flo").read_bytes()
    assert raw[:4] == b"PIEH" and struct.unpack("<ii", raw[4:12]) == (9, 7) and len(raw) == 12 + 7 * 9 * 8
    np.testing.assert_array_equal(flow.read_flo(tmp_path / "a.flo"), field)


@pytest.mark.parametrize("content, problem", [
    (b"PIE", "shorter than its 12-byte header"),
    (struct.pack("<fii", 1.0, 2, 2) + bytes(32), "not a Middlebury .flo file"),
    (struct.pack("<fii", 202021.25, 2, 2) + bytes(20), "truncated"),
    (struct.pack("<fii", 202021.25, 2, 2) + bytes(40), "longer than its header"),
    (struct.pack("<fii", 202021.25, 1 << 20, 1 << 20), "damaged"),
    (struct.pack("<fii", 202021.25, -3, 2), "damaged"),
])
def test_bad_flo_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as caught:
        flow.read_flo(path)
    assert str(path) in str(caught.value)


def test_flow_file_names_follow_artistic_videos():
    assert flow.flow_file_names(0, 1) == ("forward_1_2.flo", "reliable_1_2.pgm")
    assert flow.flow_file_names(5, 4) == ("backward_6_5.flo", "reliable_6_5.pgm")
    assert flow.flow_file_names(3, 8) == ("forward_4_9.flo", "reliable_4_9.pgm")


def test_flow_dir_resizes_and_scales_and_reads_masks(tmp_path):
    from PIL import Image

    flow.write_flo(tmp_path / "forward_1_2.flo", constant_flow(2, -1, 20, 25))  # half the frame size
    pgm = np.full((20, 25), 255, np.uint8)
    pgm[:, :10] = 0
    Image.fromarray(pgm).save(tmp_path / "reliable_1_2.pgm")
    forward, mask = flow.read_flow_dir(tmp_path, 0, 1, 50, 40)
    assert forward.shape == (40, 50, 2)
    np.testing.assert_allclose(forward, constant_flow(4, -2), atol=1e-5)
    assert (mask[:, :19] == 0).all() and (mask[:, 22:] == 1).all()
    assert flow.flow_dir_provider(tmp_path, 50, 40)(0)[0].shape == (40, 50, 2)


def test_flow_dir_masks_without_a_mask_file(tmp_path):
    field = constant_flow(3, 0)
    field[0, 0] = 1e10  # Middlebury's "unknown"
    flow.write_flo(tmp_path / "forward_2_3.flo", field)
    _, alone = flow.read_flow_dir(tmp_path, 1, 2, 50, 40)  # no reverse flow: the documented fallback
    assert alone[0, 0] == 0 and (alone[10:30, 47:] == 0).all() and (alone[10:30, 10:40] == 1).all()
    inconsistent = constant_flow(3, 0)
    inconsistent[10:20, 10:20] = 0  # the reverse flow disagrees here
    flow.write_flo(tmp_path / "backward_3_2.flo", -inconsistent)
    _, checked = flow.read_flow_dir(tmp_path, 1, 2, 50, 40)
    assert (checked[12:18, 8:16] == 0).all() and (checked[25:35, 25:35] == 1).all()


def test_flow_dir_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match="backward_4_3.flo"):
        flow.read_flow_dir(tmp_path, 3, 2, 50, 40)
    (tmp_path / "reliable_1_2.pgm").write_bytes(b"not an image")
    flow.write_flo(tmp_path / "forward_1_2.flo", constant_flow(0, 0))
    with pytest.raises(InputError, match="reliable_1_2.pgm"):
        flow.read_flow_dir(tmp_path, 0, 1, 50, 40)


def test_anchored_long_term_masks_add_a_share_where_a_closer_frame_explains():
    near = np.zeros((2, 4), np.float32)
    near[:, :2] = 1
    masks = {1: near, 5: np.ones((2, 4), np.float32)}
    exact = flow.anchored_long_term_masks(masks, 0.0)
    assert all(np.array_equal(exact[k], flow.long_term_masks(masks)[k]) for k in masks)  # anchor 0: Ruder's eq. 10
    anchored = flow.anchored_long_term_masks(masks, 0.25)
    assert np.array_equal(anchored[1], near)
    assert np.allclose(anchored[5][:, :2], 0.25) and np.allclose(anchored[5][:, 2:], 1.0)
