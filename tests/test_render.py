import numpy as np
import pytest
import torch

from ray_style import optimize
from ray_style.settings import StyleSettings
from ray_style.errors import FrameError
from ray_style.codec import decode_png, png_bytes
from ray_style.render import FrameTask, Reference, RendererCache, frame_seed, grams_digest, prepare

SETTINGS = StyleSettings(size=32, iters=4, content_weight=1.0, style_weight=1e3)


def flow_file(flow, mask):
    from ray_style.codec import flow_bytes

    return flow_bytes(flow, mask)


def task(init=None, kind="content", job="j"):
    content = np.random.default_rng(0).integers(0, 256, (18, 32, 3), dtype=np.uint8)
    references = (Reference(1, png_bytes(init)),) if init is not None else ()
    return FrameTask(job, 0, 5, png_bytes(content), kind, 4, frame_seed(0, 5), references)


def renderer(random_vgg, settings=SETTINGS):
    model = optimize.build_model(random_vgg, settings)
    targets = optimize.style_targets(model, [torch.rand(1, 3, 32, 32)], settings.style_layers)
    grams = {name: gram.numpy() for name, gram in targets.items()}
    cache = RendererCache("cpu", 2)
    return cache, cache.get("w", lambda: random_vgg, settings, grams_digest(grams), lambda: grams)


def test_model_is_reused_across_jobs_with_the_same_weights(random_vgg):
    cache, first = renderer(random_vgg)
    other = cache.get("w", lambda: 1 / 0, StyleSettings(size=32, iters=9, content_weight=1.0, style_weight=1.0), "g2",
                      lambda: first.grams)
    assert other.model is first.model and other is not first  # weights were not loaded again


def test_jobs_are_keyed_by_their_targets_content_not_an_address():
    a = {"relu1_1": np.ones((1, 2, 2), np.float32)}
    b = {"relu1_1": np.full((1, 2, 2), 2, np.float32)}
    assert grams_digest(a) == grams_digest({k: v.copy() for k, v in a.items()}) != grams_digest(b)


def test_frames_are_reproducible_and_seeded_frames_differ(random_vgg):
    _, r = renderer(random_vgg)
    a, b = r.render(task()), r.render(task())
    assert a.png == b.png and a.record.evaluations == 4 and a.job == "j" and a.record.device == "cpu"
    assert a.record.render == {"device": "cpu", "precision": "fp32", "compile": False, "graphs": False,
                               "threads": torch.get_num_threads()}
    seeded = r.render(task(init=decode_png(a.png), kind="prev"))
    assert seeded.png != a.png
    assert r.render(task(kind="noise")).record.fallback is None


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
    assert seen == ["lbfgs", "adam"] and out.record.fallback == "adam after out of memory"
    assert out.record.as_dict()["fallback"] == "adam after out of memory"


def _seeded(frame, chain, temporal=False, iters=4):
    rng = np.random.default_rng(frame)
    content = rng.integers(0, 256, (18, 32, 3), dtype=np.uint8)
    init = rng.integers(0, 256, (18, 32, 3), dtype=np.uint8)
    flow = flow_file(np.zeros((18, 32, 2)), np.ones((18, 32))) if temporal else None
    return FrameTask("j", chain, frame, png_bytes(content), "flow" if temporal else "prev", iters,
                     frame_seed(0, frame), (Reference(1, png_bytes(init), flow),), 50.0 if temporal else 0.0)


def test_a_flow_seeded_frame_reports_its_warping_error(random_vgg):
    _, r = renderer(random_vgg)
    out = r.render(_seeded(3, 0, temporal=True))
    assert out.record.warping_error is not None and 0 < out.record.warping_error < 1
    assert "warping_error" in out.record.as_dict() and r.render(_seeded(3, 0)).record.warping_error is None


def test_long_term_references_fold_into_one_target_weighted_by_their_masks(monkeypatch):
    content = np.zeros((4, 6, 3), np.uint8)
    near, far = np.full((4, 6, 3), 100, np.uint8), np.full((4, 6, 3), 200, np.uint8)
    zero = np.zeros((4, 6, 2))
    left = np.zeros((4, 6)); left[:, :3] = 1  # the previous frame explains the left half only
    task = FrameTask("j", 0, 9, png_bytes(content), "flow", 4, 0,
                     (Reference(1, png_bytes(near), flow_file(zero, left)),
                      Reference(5, png_bytes(far), flow_file(zero, np.ones((4, 6))))), 1.0)
    from ray_style import render

    monkeypatch.setattr(render, "LONG_TERM_ANCHOR", 0.0)
    prepared = prepare(task)
    # Ruder et al. §4.2: where frame t-1 is reliable it alone counts; elsewhere frame t-5 does.
    assert (prepared.target[:, :3] == 100).all() and (prepared.target[:, 3:] == 200).all()
    assert (prepared.mask == 1).all()
    assert (prepared.init[:, :3] == 100).all() and (prepared.init[:, 3:] == 0).all()  # disocclusion: content
    # With an anchor share, frame t-5 also holds the pixels t-1 explains, with that share of
    # the target; the weight stays one frame's.
    monkeypatch.setattr(render, "LONG_TERM_ANCHOR", 0.5)
    anchored = prepare(task)
    assert (anchored.target[:, :3] == round((100 + 0.5 * 200) / 1.5)).all() and (anchored.target[:, 3:] == 200).all()
    assert (anchored.mask == 1).all()


def test_a_gpu_worker_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RendererCache("auto", where="worker").warning is None
    cache = RendererCache("auto", holds_gpu=True, where="worker")
    assert cache.device == torch.device("cpu") and "no CUDA device" in cache.warning and cache.no_cuda
    # what the job's one line names: the torch build and the driver (none on this machine)
    assert torch.__version__ in cache.warning and "CUDA build" in cache.warning
    assert "NVIDIA driver" in cache.warning or "no NVIDIA driver loaded" in cache.warning


def test_the_driver_of_a_gpu_is_read_from_the_kernel_module(monkeypatch, tmp_path):
    import builtins

    from ray_style import render

    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
        version if path == "/proc/driver/nvidia/version" else path, *a, **k))
    assert render.nvidia_driver() == "NVIDIA driver 535.104.05"


def test_render_many_batches_seeded_frames_like_single_renders(random_vgg, monkeypatch):
    _, r = renderer(random_vgg)
    tasks = [_seeded(3, 0, temporal=True), _seeded(9, 1), task()]  # two seeded frames, one chain start
    batches = []
    real = optimize.stylize_batch

    def spy(model, settings, problem, **kwargs):
        batches.append(problem.init.shape[0])
        return real(model, settings, problem, **kwargs)

    monkeypatch.setattr(optimize, "stylize_batch", spy)
    outputs = r.render_many(tasks)
    assert [(o.chain, o.frame) for o in outputs] == [(0, 3), (1, 9), (0, 5)]
    assert batches == [2, 1]  # the seeded pair in one batch, the chain start alone
    singles = [r.render(t) for t in tasks]
    for batched, single in zip(outputs, singles):
        diff = decode_png(batched.png).astype(int) - decode_png(single.png).astype(int)
        assert np.abs(diff).max() <= 2
        assert batched.record.loss == pytest.approx(single.record.loss, rel=1e-3)


def test_a_failing_batch_is_retried_frame_by_frame(random_vgg, monkeypatch):
    _, r = renderer(random_vgg)
    real = optimize.stylize_batch
    bad = _seeded(9, 1)
    bad_mean = float(torch.from_numpy(np.array(decode_png(bad.references[0].image))).float().div(255).mean())

    def nan_in_frame_9(model, settings, problem, **kwargs):
        init = problem.init
        if init.shape[0] > 1 or abs(float(init.mean()) - bad_mean) < 1e-6:
            raise FrameError("loss is nan after 4 evaluations: lower --style-weight")
        return real(model, settings, problem, **kwargs)

    monkeypatch.setattr(optimize, "stylize_batch", nan_in_frame_9)
    outputs = r.render_many([_seeded(3, 0), bad])
    assert outputs[0].frame == 3 and isinstance(outputs[1], FrameError)
