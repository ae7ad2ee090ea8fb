import dataclasses

import numpy as np
import pytest
import torch

from ray_style import images, optimize
from ray_style.settings import StyleSettings
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


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_every_evaluation_of_the_budget_runs_and_is_counted(random_vgg, monkeypatch, optimizer):
    # From the content image the gradient is tiny: torch's LBFGS (tolerance_grad) would stop at
    # once. The count is of the objective's calls that ran, not the budget copied.
    calls = []
    real = optimize._loss_of

    def counted(objective):
        loss = real(objective)
        return lambda image: calls.append(image.shape[0]) or loss(image)

    monkeypatch.setattr(optimize, "_loss_of", counted)
    settings = dataclasses.replace(TINY, style_weight=1e-12, iters=8, optimizer=optimizer)
    _, result = run(random_vgg, settings)
    assert result.evaluations == len(calls) == 8


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
    with pytest.raises(FrameError, match="loss is inf after .* lower --style-weight or --learning-rate"):
        run(random_vgg, dataclasses.replace(TINY, optimizer="adam", style_weight=1e300))  # overflows float32


@pytest.mark.weights
def test_real_weights_transfer_style(real_vgg, photo, painting):
    """Real features: the result moves towards the painting's Gram statistics, visibly."""
    settings = StyleSettings(size=64, iters=40, seed=0)
    out, result = optimize.stylize_image(photo, [painting], settings, real_vgg)
    _, start = optimize.stylize_image(photo, [painting], dataclasses.replace(settings, iters=1), real_vgg)
    assert result.style_loss < 0.2 * start.style_loss
    content = images.resize_long_edge(photo, 64).astype(float)
    assert 10 < np.abs(out.astype(float) - content).mean() < 120  # changed, not destroyed


@pytest.mark.weights
def _beta_sweep(real_vgg, photo, painting, iters: int) -> tuple[list[float], list[float]]:
    """Final style and content losses of the photo at 64 px for β = 1e2 … 1e6."""
    styles, contents = [], []
    for beta in (1e2, 1e3, 1e4, 1e5, 1e6):
        _, result = optimize.stylize_image(photo, [painting], StyleSettings(size=64, iters=iters, style_weight=beta),
                                           real_vgg)
        styles.append(result.style_loss)
        contents.append(result.content_loss)
    return styles, contents


def test_more_style_weight_never_means_less_style(real_vgg, photo, painting):
    """β from 1e2 to 1e6 (64 px, 50 evaluations from the photo): the style loss never ends
    visibly above what a smaller β reached, and the content loss never falls as β grows. (It
    once rose 17× from 1e2 to 1e4: L-BFGS dropped every correction pair at large β.) At 50
    evaluations, runs whose loss differs only in scale still take paths that end ±10 % apart."""
    styles, contents = _beta_sweep(real_vgg, photo, painting, iters=50)
    for k in range(1, len(styles)):
        assert styles[k] <= 1.15 * min(styles[:k]), styles
        assert contents[k] >= 0.95 * contents[k - 1], contents


@pytest.mark.slow
def test_more_style_weight_never_means_more_style_loss_within_5_percent(real_vgg, photo, painting):
    """The issue's 5 % bound, where paths have settled: 200 evaluations at 64 px, β = 1e2 … 1e6,
    the style loss never rises by more than 5 % as β grows, the content loss never falls by more."""
    styles, contents = _beta_sweep(real_vgg, photo, painting, iters=200)
    for k in range(1, len(styles)):
        assert styles[k] <= 1.05 * styles[k - 1], styles
        assert contents[k] >= 0.95 * contents[k - 1], contents


def _objective_parts(random_vgg, settings=TINY, batch=1):
    model = optimize.build_model(random_vgg, settings)
    content = torch.stack([images.to_tensor(_img(i))[0] for i in range(batch)])
    grams = optimize.style_targets(model, [images.to_tensor(_img(9))], settings.style_layers)
    return model, content, grams


def test_a_batch_optimizes_each_image_as_if_alone(random_vgg):
    # A start inside the box: from pixels on its faces, float-level differences of batched
    # convolutions flip which pixels stay held at a bound and the trajectories part (both
    # equally good), so that start tests nothing about batching.
    settings = dataclasses.replace(TINY, iters=6)
    model, content, grams = _objective_parts(random_vgg, settings, batch=2)
    init = content.flip(3) * 0.8 + 0.1
    together = optimize.stylize_batch(model, settings, optimize.Problem(init, content, grams, iters=(6, 3)))
    alone = [optimize.stylize(model, settings, optimize.Problem(init[i:i + 1], content[i:i + 1], grams, iters=n))
             for i, n in enumerate([6, 3])]
    assert [r.evaluations for r in together] == [6, 3]  # each within its own budget, counted
    for batched, single in zip(together, alone):
        assert batched.evaluations == single.evaluations
        torch.testing.assert_close(batched.image, single.image, atol=1e-4, rtol=0)
        assert batched.loss == pytest.approx(single.loss, rel=1e-5)
        assert batched.image.min() >= 0 and batched.image.max() <= 1


def test_temporal_weight_per_image_in_a_batch(random_vgg):
    model, content, grams = _objective_parts(random_vgg, batch=2)
    warped, mask = torch.rand_like(content), torch.ones_like(content[:, :1])
    plain = optimize.Objective(model, TINY, content, grams)(content)[0]
    temporal = optimize.Temporal(warped, mask, torch.tensor([0.0, 5.0]))
    mixed = optimize.Objective(model, TINY, content, grams, temporal)(content)[0]
    assert mixed[0] == plain[0] and mixed[1] > plain[1]


def test_bf16_forward_keeps_the_loss_and_its_gradient(random_vgg):
    model, content, grams = _objective_parts(random_vgg)
    image = torch.rand_like(content).requires_grad_(True)
    values, grads = [], []
    for precision in ("fp32", "bf16"):
        objective = optimize.Objective(model, dataclasses.replace(TINY, precision=precision), content, grams)
        total = objective(image)[0]
        assert total.dtype == torch.float32  # Grams and losses stay fp32 under autocast
        (grad,) = torch.autograd.grad(total.sum(), image)
        values.append(total.item())
        grads.append(grad.flatten())
    assert values[1] == pytest.approx(values[0], rel=0.03)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.98


def test_channels_last_input_gives_the_same_objective(random_vgg):
    model, content, grams = _objective_parts(random_vgg)
    image = torch.rand_like(content)
    objective = optimize.Objective(model, TINY, content, grams)
    reference = objective(image)[0]
    objective.channels_last = True  # what a GPU gets
    torch.testing.assert_close(objective(image)[0], reference, rtol=1e-4, atol=0)


def test_precision_resolution():
    assert optimize.resolve_precision("auto", "cpu") == "fp32"
    assert optimize.resolve_precision("auto", "cuda") == "bf16"  # the fastest objective measured on a GPU
    assert optimize.resolve_precision("tf32", "cpu") == "fp32"
    assert optimize.resolve_precision("bf16", "cpu") == "bf16"
    # compiled and graph-captured by default on a GPU only; the CPU default stays eager fp32
    assert optimize.resolve_compile(None, "cuda") and not optimize.resolve_compile(None, "cpu")
    assert optimize.resolve_compile(True, "cpu") and not optimize.resolve_compile(False, "cuda")
    assert optimize.resolve_graphs(None, TINY, "cuda") and not optimize.resolve_graphs(None, TINY, "cpu")
    assert not optimize.resolve_graphs(False, TINY, "cuda")
    assert not optimize.resolve_graphs(None, dataclasses.replace(TINY, optimizer="adam"), "cuda")



def test_one_rule_for_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert optimize.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="--device cuda: no CUDA GPU is visible here"):
        optimize.resolve_device("cuda")
    assert optimize.resolve_device("cuda", where="driver") == torch.device("cpu")  # frames render elsewhere
    assert optimize.resolve_device("auto", where="worker", holds_gpu=True) == torch.device("cpu")  # said, refused
    with pytest.raises(InputError, match="unknown --device 'gpu'"):
        optimize.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert optimize.resolve_device("auto") == torch.device("cuda")
    assert optimize.resolve_device("cuda:1", where="driver") == torch.device("cuda:1")
    assert optimize.resolve_device("auto", where="worker", holds_gpu=False) == torch.device("cuda")
    assert optimize.resolve_device("cpu", where="worker", holds_gpu=True) == torch.device("cpu")


def test_render_facts_say_what_decides_a_frames_bytes():
    assert optimize.render_facts(TINY, "cpu", 2) == {"device": "cpu", "precision": "fp32", "compile": False,
                                                     "graphs": False, "threads": 2}
    assert optimize.render_facts(TINY, "cuda", 2) == {"device": "cuda", "precision": "bf16", "compile": True,
                                                      "graphs": True}


def test_scale_shapes_double_up_to_full_size():
    assert optimize.scale_shapes(90, 160, 3) == [(22, 40), (45, 80), (90, 160)]
    assert optimize.scale_shapes(90, 160, 1) == [(90, 160)]
    assert optimize.scale_shapes(24, 32, 3) == [(24, 32)]  # 12 × 16 and 6 × 8 are too small for VGG
    with pytest.raises(InputError, match="--scales 4 at --size 32"):
        StyleSettings(size=32, scales=4).validate()


def test_coarse_to_fine_runs_every_scale_and_reports_all_evaluations(random_vgg):
    settings = dataclasses.replace(TINY, size=64, scales=2, iters=5)
    seen = []
    out, result = run(random_vgg, settings, progress=seen.append)
    assert out.shape == (48, 64, 3) and result.evaluations == 10
    assert seen[-1].evaluation == 10 and seen[-1].total == 10
    single, _ = run(random_vgg, dataclasses.replace(settings, scales=1))
    assert not np.array_equal(out, single)


@pytest.mark.slow
def test_compiled_objective_matches_eager(random_vgg):
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("torch.compile on CPU needs a C compiler")
    model, content, grams = _objective_parts(random_vgg)
    image = torch.rand_like(content).requires_grad_(True)
    results = []
    for compiled in (False, True):
        objective = optimize.Objective(model, dataclasses.replace(TINY, compile=compiled), content, grams)
        total = objective(image)[0]
        results.append((total.detach(), torch.autograd.grad(total.sum(), image)[0]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=0)
    eager_grad, compiled_grad = results[0][1], results[1][1]
    assert (compiled_grad - eager_grad).norm() < 1e-3 * eager_grad.norm()


def test_frames_reusing_a_captured_engine_equal_fresh_ones_bit_for_bit(random_vgg, monkeypatch):
    # What a GPU does for every frame of a shape: one static objective and L-BFGS buffers
    # (the captured step's), refilled with each frame's targets. On this CPU the same step runs
    # eagerly in those buffers; it must give exactly what a fresh objective and state give.
    settings = dataclasses.replace(TINY, iters=5)
    model, content, grams = _objective_parts(random_vgg, settings, batch=2)
    frames = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        warped = torch.rand(content.shape, generator=generator)
        mask = (torch.rand(2, 1, *content.shape[2:], generator=generator) > 0.3).float()
        temporal = optimize.Temporal(warped, mask, torch.tensor([0.0, 50.0 * seed]))
        frames.append(optimize.Problem(warped, content.roll(seed, 3), grams, temporal, iters=(5, 3)))
    fresh = [optimize.stylize_batch(model, settings, problem, graphs=False) for problem in frames]
    monkeypatch.setattr(optimize, "resolve_graphs", lambda graphs, settings, device: True)
    optimize.release_graphs()
    try:
        reused = [optimize.stylize_batch(model, settings, problem) for problem in frames]
        assert len(optimize._ENGINES) == 1  # both frames ran in one engine
    finally:
        optimize.release_graphs()
    for fresh_frame, reused_frame in zip(fresh, reused):
        for a, b in zip(fresh_frame, reused_frame):
            assert torch.equal(a.image, b.image) and a.loss == b.loss and a.evaluations == b.evaluations
    assert not torch.equal(fresh[0][1].image, fresh[1][1].image)  # the second frame really was another


def test_a_static_objective_refuses_another_kind_of_frame(random_vgg):
    model, content, grams = _objective_parts(random_vgg)
    objective = optimize.Objective(model, TINY, content, grams, static=True)
    before = objective(content)[0]
    objective.load(content.flip(3), grams)
    assert not torch.equal(objective(content)[0], before)  # refilled in place
    with pytest.raises(ValueError, match="another kind of frame"):
        objective.load(content, grams, optimize.Temporal(content, torch.ones_like(content[:, :1]), 1.0))
    with pytest.raises(ValueError, match="static"):
        optimize.Objective(model, TINY, content, grams).load(content, grams)
