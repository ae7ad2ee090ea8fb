import numpy as np
import pytest
import torch

from ray_style import images, optimize
from ray_style.errors import FrameError
from ray_style.config import StyleSettings
from ray_style.render import FrameTask, RendererCache, frame_seed

SETTINGS = StyleSettings(size=32, iters=4, content_weight=1.0, style_weight=1e3)


def task(init=None, kind="content"):
    content = np.random.default_rng(0).integers(0, 256, (18, 32, 3), dtype=np.uint8)
    return FrameTask(0, 5, content, init, kind, 4, frame_seed(0, 5))


def renderer(random_vgg, settings=SETTINGS):
    model = optimize.build_model(random_vgg, settings)
    targets = optimize.style_targets(model, [torch.rand(1, 3, 32, 32)], settings.style_layers)
    grams = {name: gram.numpy() for name, gram in targets.items()}
    cache = RendererCache("cpu", 2)
    return cache, cache.get("w", lambda: random_vgg, settings, "g", lambda: grams)


def test_model_is_reused_across_jobs_with_the_same_weights(random_vgg):
    cache, first = renderer(random_vgg)
    other = cache.get("w", lambda: 1 / 0, StyleSettings(size=32, iters=9, content_weight=1.0, style_weight=1.0), "g2",
                      lambda: first.grams)
    assert other.model is first.model and other is not first  # weights were not loaded again


def test_frames_are_reproducible_and_seeded_frames_differ(random_vgg):
    _, r = renderer(random_vgg)
    a, b = r.render(task()), r.render(task())
    assert np.array_equal(a.image, b.image) and a.evaluations == 4
    seeded = r.render(task(init=a.image, kind="prev"))
    assert not np.array_equal(seeded.image, a.image)
    assert r.render(task(kind="noise")).fallback is None


def test_out_of_memory_retries_with_adam(random_vgg, monkeypatch):
    _, r = renderer(random_vgg)
    real = optimize.stylize
    seen = []

    def tight_memory(model, settings, *args, **kwargs):
        seen.append(settings.optimizer)
        if settings.optimizer == "lbfgs":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, settings, *args, **kwargs)

    monkeypatch.setattr(optimize, "stylize", tight_memory)
    out = r.render(task())
    assert seen == ["lbfgs", "adam"] and out.fallback == "adam after out of memory"


def _seeded(frame, chain, temporal=False, iters=4):
    rng = np.random.default_rng(frame)
    content = rng.integers(0, 256, (18, 32, 3), dtype=np.uint8)
    init = rng.integers(0, 256, (18, 32, 3), dtype=np.uint8)
    extra = (init, np.ones((18, 32), np.uint8), 50.0) if temporal else ()
    return FrameTask(chain, frame, content, init, "flow" if temporal else "prev", iters, frame_seed(0, frame), *extra)


def test_render_many_batches_seeded_frames_like_single_renders(random_vgg, monkeypatch):
    _, r = renderer(random_vgg)
    tasks = [_seeded(3, 0, temporal=True), _seeded(9, 1), task()]  # two seeded frames, one chain start
    batches = []
    real = optimize.stylize_batch

    def spy(model, settings, init, *args, **kwargs):
        batches.append(init.shape[0])
        return real(model, settings, init, *args, **kwargs)

    monkeypatch.setattr(optimize, "stylize_batch", spy)
    outputs = r.render_many(tasks)
    assert [(o.chain, o.frame) for o in outputs] == [(0, 3), (1, 9), (0, 5)]
    assert batches == [2, 1]  # the seeded pair in one batch, the chain start alone
    singles = [r.render(t) for t in tasks]
    for batched, single in zip(outputs, singles):
        assert np.abs(batched.image.astype(int) - single.image.astype(int)).max() <= 2
        assert batched.loss == pytest.approx(single.loss, rel=1e-3)


def test_a_failing_batch_is_retried_frame_by_frame(random_vgg, monkeypatch):
    _, r = renderer(random_vgg)
    real = optimize.stylize_batch

    def nan_in_frame_9(model, settings, init, *args, **kwargs):
        if init.shape[0] > 1 or float(init.mean()) == float(images.to_tensor(_seeded(9, 1).init).mean()):
            raise FrameError("loss is nan after 4 evaluations: lower --style-weight")
        return real(model, settings, init, *args, **kwargs)

    monkeypatch.setattr(optimize, "stylize_batch", nan_in_frame_9)
    outputs = r.render_many([_seeded(3, 0), _seeded(9, 1)])
    assert outputs[0].frame == 3 and isinstance(outputs[1], FrameError)
