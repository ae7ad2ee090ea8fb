"""Exact tiling: tiles give the whole frame's loss and gradient."""
import dataclasses

import numpy as np
import pytest
import torch

from ray_style import images, optimize, tiling
from ray_style.errors import InputError
from ray_style.settings import StyleSettings
from ray_style.weights import random_weights

SHALLOW = StyleSettings(size=96, iters=6, content_weight=1.0, style_weight=1e3, seed=1,
                        style_layers=("relu1_1", "relu2_1", "relu3_1"), content_layers=("relu2_2",))
DEEP = dataclasses.replace(SHALLOW, style_layers=StyleSettings().style_layers, content_layers=("relu4_2",))


def _model(random_vgg, settings, dtype=torch.float64, arch="vgg19"):
    weights = random_vgg if arch == "vgg19" else random_weights(arch)
    return optimize.build_model(weights, settings).to(dtype)


def _problem(height, width, batch=2, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator).to(dtype)
    content = torch.rand(1, 3, height, width, generator=generator).to(dtype)
    style = torch.rand(1, 3, 40, 56, generator=generator).to(dtype)
    return image, content, style


def _loss_and_gradient(objective, image):
    x = image.clone().requires_grad_(True)
    total, content, style = objective(x)
    (gradient,) = torch.autograd.grad(total.sum(), x)
    return total.detach(), content, style, gradient


def _compare(model, settings, height, width, grid, temporal=None, dtype=torch.float64):
    image, content, style = _problem(height, width, dtype=dtype)
    grams = optimize.style_targets(model, [style], settings.style_layers)
    whole = optimize.Objective(model, settings, content, grams, temporal)
    tiles = tiling.Tiling(model, height, width, grid)
    tiled = optimize.Objective(model, settings, content, grams, temporal, tiles=tiles)
    for name, target in whole.content_targets.items():
        torch.testing.assert_close(tiled.content_targets[name], target)
    return _loss_and_gradient(whole, image), _loss_and_gradient(tiled, image), tiles


def test_receptive_fields_are_vggs():
    """The textbook receptive fields: VGG16's conv5_3 sees 196 px, its pool5 212."""
    settings = StyleSettings(style_layers=("pool5",), content_layers=())
    model = optimize.build_model(random_weights("vgg16"), settings)
    reach = tiling.reaches(model)
    assert reach["conv5_3"].high - reach["conv5_3"].low + 1 == 196
    assert reach["pool5"].high - reach["pool5"].low + 1 == 212 and reach["pool5"].jump == 32
    assert reach["relu1_1"] == tiling.Reach(1, -1, 1)


def test_halos_are_multiples_of_the_stride(random_vgg):
    stride, before, after = tiling.halos(_model(random_vgg, DEEP))
    assert stride == 16 and before % 16 == 0 and after % 16 == 0 and before >= 78 and after >= 78
    assert tiling.halos(_model(random_vgg, SHALLOW)) == (4, 12, 12)


def test_spans_cover_the_frame_once_on_stride_borders():
    spans = tiling.spans(100, 3, 16, 32, 16)
    assert [(s.core_start, s.core_end) for s in spans] == [(0, 32), (32, 64), (64, 100)]
    assert [(s.crop_start, s.crop_end) for s in spans] == [(0, 48), (0, 80), (32, 100)]
    assert len(tiling.spans(40, 9, 16, 0, 0)) == 2  # never more pieces than whole stride units


@pytest.mark.parametrize("grid", [(3, 3), (2, 4), (1, 1)])
def test_tiled_loss_and_gradient_equal_the_whole_frames(random_vgg, grid):
    """Shallow layers at 96×80: halos of 12 px in cores of ~32 px, so every tile reads real halos
    and owns units next to other tiles' (float64: equal to rounding)."""
    model = _model(random_vgg, SHALLOW)
    (total, content, style, gradient), (t_total, t_content, t_style, t_gradient), tiles = \
        _compare(model, SHALLOW, 96, 80, grid)
    assert len(tiles) == grid[0] * grid[1]
    torch.testing.assert_close(t_total, total, rtol=1e-12, atol=0)
    torch.testing.assert_close(t_content, content, rtol=1e-12, atol=0)
    torch.testing.assert_close(t_style, style, rtol=1e-12, atol=0)
    torch.testing.assert_close(t_gradient, gradient, rtol=1e-9, atol=1e-12 * gradient.abs().max().item())


@pytest.mark.slow
def test_default_layers_tiled_through_relu5_1(random_vgg):
    """The paper's layers (stride 16, halos of 80 px) at 336×304 in 2×3 tiles, float32 as
    frames are optimized, and VGG16 (other receptive fields) too."""
    for arch in ("vgg19", "vgg16"):
        model = _model(random_vgg, DEEP, torch.float32, arch=arch)
        (total, _, _, gradient), (t_total, _, _, t_gradient), tiles = _compare(model, DEEP, 336, 304, (2, 3),
                                                                               dtype=torch.float32)
        assert max(t.rows.crop_end - t.rows.crop_start for t in tiles.tiles) < 336
        torch.testing.assert_close(t_total, total, rtol=1e-5, atol=0)
        assert (t_gradient - gradient).abs().max() <= 1e-4 * gradient.abs().max()


def test_too_narrow_a_halo_changes_the_gradient(random_vgg, monkeypatch):
    """The comparison above can fail: one stride less halo and border units are wrong."""
    model = _model(random_vgg, SHALLOW)
    stride, before, after = tiling.halos(model)
    monkeypatch.setattr(tiling, "halos", lambda m: (stride, before - stride, after - stride))
    (_, _, _, gradient), (_, _, _, t_gradient), _ = _compare(model, SHALLOW, 96, 80, (3, 3))
    assert (t_gradient - gradient).abs().max() > 1e-7 * gradient.abs().max()  # exact ones differ by 1e-15


def test_pixel_terms_and_a_batch_with_tiles(random_vgg):
    """TV and the temporal loss (per-image weights) are added on the whole image."""
    settings = dataclasses.replace(SHALLOW, tv_weight=3.0)
    model = _model(random_vgg, settings)
    warped = torch.rand(2, 3, 96, 80, dtype=torch.float64)
    mask = (torch.rand(2, 1, 96, 80) > 0.3).to(torch.float64)
    temporal = optimize.Temporal(warped, mask, torch.tensor([0.0, 50.0], dtype=torch.float64))
    (total, _, _, gradient), (t_total, _, _, t_gradient), _ = _compare(model, settings, 96, 80, (2, 2), temporal)
    torch.testing.assert_close(t_total, total, rtol=1e-12, atol=0)
    torch.testing.assert_close(t_gradient, gradient, rtol=1e-9, atol=1e-12 * gradient.abs().max().item())


def test_tiled_style_targets_equal_whole_ones(random_vgg):
    model = _model(random_vgg, DEEP, torch.float32)
    style = torch.rand(1, 3, 300, 280)
    whole = optimize.style_targets(model, [style], DEEP.style_layers)
    small = tiling.evaluation_bytes(model, 300, 280) * 6 // 10
    assert tiling.choose(model, 300, 280, small) is not None
    tiled = optimize.style_targets(model, [style], DEEP.style_layers, budget=small)
    for name in whole:
        torch.testing.assert_close(tiled[name], whole[name], rtol=1e-5, atol=1e-6 * whole[name].abs().max().item())


def test_a_tiled_frame_is_the_whole_frame_after_several_evaluations(random_vgg):
    """--max-memory small enough to tile: the optimized image is the untiled one within float
    tolerance (L-BFGS amplifies rounding a little per step)."""
    rng = np.random.default_rng(4)
    content = images.resize(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), 96, 72)
    style = images.resize(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), 80, 60)
    settings = dataclasses.replace(SHALLOW, iters=8)
    model = optimize.build_model(random_vgg, settings)
    budget = tiling.optimizer_bytes(72, 96, 1, settings.lbfgs_history) + tiling.evaluation_bytes(model, 72, 96) // 2
    tiles = tiling.choose(model, 72, 96, budget, history=settings.lbfgs_history)
    assert tiles is not None and len(tiles) >= 2
    whole, whole_result = optimize.stylize_image(content, [style], settings, random_vgg)
    tiled, tiled_result = optimize.stylize_image(content, [style], dataclasses.replace(
        settings, max_memory=budget / tiling.GIB), random_vgg)
    assert tiled_result.evaluations == whole_result.evaluations == 8
    assert tiled_result.loss == pytest.approx(whole_result.loss, rel=1e-4)
    assert np.abs(tiled.astype(int) - whole).max() <= 1


def test_choose_tiles_only_what_does_not_fit(random_vgg):
    model = _model(random_vgg, DEEP, torch.float32)
    need = tiling.evaluation_bytes(model, 1080, 1920) + tiling.optimizer_bytes(1080, 1920, 1, 20)
    assert tiling.choose(model, 1080, 1920, None) is None
    assert tiling.choose(model, 1080, 1920, need, history=20) is None
    half = tiling.choose(model, 1080, 1920, need // 2, history=20)
    quarter = tiling.choose(model, 1080, 1920, need // 4, history=20)
    assert 2 <= len(half) < len(quarter)
    assert tiling.evaluation_bytes(model, *quarter.largest_crop()) <= need // 4
    with pytest.raises(InputError) as refused:
        tiling.choose(model, 1080, 1920, tiling.optimizer_bytes(1080, 1920, 1, 20) + 1000, history=20)
    assert "--max-memory" in str(refused.value) and "\n" not in str(refused.value)


def test_max_memory_is_an_option_that_is_not_a_look():
    from ray_style.settings import OptionError, as_dict

    with pytest.raises(OptionError):
        StyleSettings(max_memory=0).validate()
    with pytest.raises(OptionError):
        StyleSettings(max_memory=float("nan")).validate()
    assert "max_memory" not in as_dict(StyleSettings(max_memory=4.0))  # a job resumes under another limit


def test_image_command_refuses_a_limit_no_tile_fits(tmp_path, capsys):
    from ray_style.cli import main
    from tests.conftest import SAMPLES

    code = main(["image", str(SAMPLES / "chelsea.png"), str(SAMPLES / "starry_night.jpg"), "-o", str(tmp_path / "out.png"),
                 "--weights", "random", "--size", "64", "--iters", "2", "--max-memory", "0.001"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--max-memory" in err and "smallest tiles" in err
    assert not (tmp_path / "out.png").exists()
