import dataclasses

import numpy as np
import pytest
import torch

from ray_style import images, optimize
from ray_style.config import StyleSettings
from ray_style.errors import FrameError, InputError

TINY = StyleSettings(size=32, iters=12, content_weight=1.0, style_weight=1e3, seed=3)


def run(random_vgg, settings=TINY, content=None, styles=None, **kwargs):
    content = images.resize_long_edge(content if content is not None else _img(0), 64)
    styles = styles or [_img(1)]
    return optimize.stylize_image(content, styles, settings, random_vgg, **kwargs)


def _img(seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    return images.resize(base, 64, 48)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_counts_evaluations_and_lowers_the_loss(random_vgg, optimizer):
    settings = dataclasses.replace(TINY, optimizer=optimizer, init="noise", iters=15)
    seen = []
    out, result = run(random_vgg, settings, progress=seen.append)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert result.evaluations == 15
    assert [p.evaluation for p in seen] == [10, 15]
    first = seen[0].loss
    short = dataclasses.replace(settings, iters=1)
    _, start = run(random_vgg, short)
    assert result.loss < start.loss and result.loss < first * 1.5


def test_same_inputs_same_bytes_and_seed_matters(random_vgg):
    settings = dataclasses.replace(TINY, init="noise")
    a, _ = run(random_vgg, settings)
    b, _ = run(random_vgg, settings)
    c, _ = run(random_vgg, dataclasses.replace(settings, seed=4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_lbfgs_does_not_stop_early_from_content_init(random_vgg):
    # torch's default tolerance_grad would end at once here (DESIGN.md §6).
    settings = dataclasses.replace(TINY, style_weight=1e-12, iters=8)
    _, result = run(random_vgg, settings)
    assert result.evaluations == 8


def test_style_targets_blend_and_reject_bad_weights(random_vgg):
    model = optimize.build_model(random_vgg, TINY)
    a, b = images.to_tensor(_img(1)), images.to_tensor(_img(2))
    ga = optimize.style_targets(model, [a], ["relu1_1"])["relu1_1"]
    gb = optimize.style_targets(model, [b], ["relu1_1"])["relu1_1"]
    blended = optimize.style_targets(model, [a, b], ["relu1_1"], [3, 1])["relu1_1"]
    torch.testing.assert_close(blended, 0.75 * ga + 0.25 * gb)
    with pytest.raises(InputError, match="one per style"):
        optimize.style_targets(model, [a, b], ["relu1_1"], [1])


def test_init_image_original_colors_and_nan(random_vgg):
    out, _ = run(random_vgg, dataclasses.replace(TINY, original_colors=True), init_image=_img(5))
    assert out.shape == (24, 32, 3)
    with pytest.raises(FrameError, match="loss became"):
        run(random_vgg, dataclasses.replace(TINY, optimizer="adam", style_weight=float("inf")))


def test_settings_validation():
    with pytest.raises(InputError, match="--size 4 is out of range"):
        StyleSettings(size=4).validate()
    with pytest.raises(InputError, match="one per layer"):
        StyleSettings(style_layer_weights=(1.0,)).validate()


@pytest.mark.weights
def test_real_weights_transfer_style(real_vgg, photo, painting):
    """Real features: the result moves towards the painting's Gram statistics, visibly."""
    settings = StyleSettings(size=64, iters=40, seed=0)
    out, result = optimize.stylize_image(photo, [painting], settings, real_vgg)
    _, start = optimize.stylize_image(photo, [painting], dataclasses.replace(settings, iters=1), real_vgg)
    assert result.style_loss < 0.2 * start.style_loss
    content = images.resize_long_edge(photo, 64).astype(float)
    assert 10 < np.abs(out.astype(float) - content).mean() < 120  # changed, not destroyed
