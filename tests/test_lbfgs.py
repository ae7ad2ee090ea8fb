import contextlib

import pytest
import torch

from ray_style import lbfgs


def _quadratic(n=40, seed=0, conditioning=0.05):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator)
    a = a @ a.T / n + conditioning * torch.eye(n)
    b = torch.randn(n, generator=generator)
    solution = torch.linalg.solve(a, b)

    def loss(x):
        return 0.5 * ((x @ a) * x).sum(1) - x @ b

    return loss, solution


def test_reaches_a_quadratics_minimum():
    loss, solution = _quadratic(conditioning=0.3)  # float32 resolves x only so far at worse conditioning
    state = lbfgs.minimize(loss, torch.zeros(1, solution.numel()), 60, memory=20)
    torch.testing.assert_close(state.x[0], solution, atol=2e-3, rtol=0)
    torch.testing.assert_close(state.f, loss(solution[None]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bounds", [None, (-0.5, 0.5)])
def test_the_loss_scale_changes_nothing(bounds):
    """L-BFGS is invariant to the loss's units: a style weight 10⁸ times larger makes the same
    steps. (Pairs were once kept only while sᵀy/yᵀy > 1e-10, an inverse-Hessian scale: past it
    every pair was dropped, and a large β got steepest descent — and less style.)"""
    loss, _ = _quadratic(conditioning=0.05)
    runs = [lbfgs.minimize(lambda x, c=scale: c * loss(x), torch.zeros(1, 40), 40, memory=10, bounds=bounds)
            for scale in (1.0, 1e12)]
    assert (runs[1].age >= 0).sum() == (runs[0].age >= 0).sum() == 10  # pairs kept at both scales
    torch.testing.assert_close(runs[1].f / 1e12, runs[0].f, atol=0, rtol=1e-5)
    torch.testing.assert_close(runs[1].x, runs[0].x, atol=1e-2, rtol=0)  # float32 rounding differs, not the path


def test_rosenbrock_from_a_hard_start():
    def rosenbrock(x):
        return ((1 - x[:, :-1]) ** 2).sum(1) + 100 * ((x[:, 1:] - x[:, :-1] ** 2) ** 2).sum(1)

    state = lbfgs.minimize(rosenbrock, torch.full((1, 6), -1.2), 300, memory=10)
    assert state.f.item() < 1e-8
    torch.testing.assert_close(state.x, torch.ones(1, 6), atol=1e-4, rtol=0)


def test_accepted_losses_only_decrease_and_each_step_is_one_evaluation():
    loss, solution = _quadratic(seed=1)
    calls, seen = [0], []

    def counted(x):
        calls[0] += 1
        return loss(x)

    lbfgs.minimize(counted, torch.zeros(1, solution.numel()), 30, on_step=lambda s: seen.append(s.f.item()))
    assert calls[0] == 30 and len(seen) == 29
    assert all(b <= a for a, b in zip(seen, seen[1:]))


def test_a_batch_is_independent_problems_with_their_own_budgets():
    loss, solution = _quadratic(seed=2)
    starts = torch.stack([torch.zeros(solution.numel()), torch.linspace(-1, 1, solution.numel())])
    together = lbfgs.minimize(loss, starts, 25, budget=torch.tensor([25, 9]))
    first = lbfgs.minimize(loss, starts[:1], 25)
    second = lbfgs.minimize(loss, starts[1:], 9)
    torch.testing.assert_close(together.x[0], first.x[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(together.x[1], second.x[0], atol=1e-4, rtol=1e-4)
    assert together.f[1] > together.f[0]  # the second stopped after 9 evaluations


def test_box_constraint_is_respected_and_its_optimum_found():
    target = torch.tensor([[-0.5, 0.25, 0.75, 1.8]])

    def loss(x):
        return ((x - target) ** 2 * torch.tensor([1.0, 10.0, 100.0, 3.0])).sum(1)

    state = lbfgs.minimize(loss, torch.full((1, 4), 0.5), 40, bounds=(0.0, 1.0))
    assert state.x.min() >= 0 and state.x.max() <= 1
    torch.testing.assert_close(state.x, target.clamp(0, 1), atol=1e-4, rtol=0)


def test_non_finite_trials_are_rejected_not_taken():
    loss_inner, solution = _quadratic(seed=3)

    def loss(x):  # a wall: the loss is inf beyond |x| = 2 (the minimum lies inside)
        return torch.where(x.abs().amax(1) > 2, torch.full_like(x[:, 0], float("inf")), loss_inner(x))

    state = lbfgs.minimize(loss, torch.zeros(1, solution.numel()), 120)
    assert torch.isfinite(state.f).all() and torch.isfinite(state.x).all()
    assert state.f.item() < loss_inner(torch.zeros(1, solution.numel())).item()


@contextlib.contextmanager
def _no_host_reads():
    """Fail on any read of a tensor's value into Python (each a GPU synchronization)."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("host read inside the optimizer loop")

    names = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def test_the_loop_never_reads_a_tensor_on_the_host():
    loss, solution = _quadratic(seed=4)
    with _no_host_reads():
        with pytest.raises(AssertionError, match="host read"):
            bool(torch.ones(()))  # the guard works
        state = lbfgs.minimize(loss, torch.zeros(2, solution.numel()), 20, bounds=(-1.0, 1.0))
    assert torch.isfinite(state.f).all()


@pytest.mark.parametrize("algebra", lbfgs.ALGEBRAS)
def test_a_reused_minimizer_never_reads_a_tensor_on_the_host(algebra):
    loss, _ = _separable(2, 3 * 40 * 40)
    minimizer = lbfgs.Minimizer(loss, (2, 3, 40, 40), memory=4, bounds=(0.0, 1.0), algebra=algebra)
    minimizer.run(torch.full((2, 3, 40, 40), 0.5), 6)
    with _no_host_reads():
        state = minimizer.run(torch.full((2, 3, 40, 40), 0.25), 12, budget=[12, 7])
    assert torch.isfinite(state.f).all()


def test_the_optimizer_imports_without_ffmpeg_or_ray():
    # A GPU machine running the benchmark suite may have neither.
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('imageio_ffmpeg', 'ray'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import ray_style, benchmarks.suite\n"
            "from ray_style import lbfgs, optimize\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def _separable(batch: int, n: int, seed: int = 5):
    """An objective whose arithmetic is the same for any batch size (no matrix products)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, n, generator=generator) * 1.4 - 0.2  # partly outside [0, 1]
    weight = torch.rand(batch, n, generator=generator) + 0.5

    def loss(x):
        x = x.reshape(x.shape[0], -1)
        return (weight[:x.shape[0]] * (x - target[:x.shape[0]]) ** 2).sum(1) + ((x[:, 1:] - x[:, :-1]) ** 2).sum(1)

    return loss, target


def test_chunks_divide_the_variables_for_split_k():
    assert lbfgs.chunks(3 * 512 * 512, "splitk") == 256  # 3072 variables per chunk
    assert lbfgs.chunks(3 * 256 * 256, "splitk") == 192  # chunks stay ≥ MIN_CHUNK long
    for n in (3 * 288 * 512, 3 * 341 * 512, 3 * 97 * 89, 5000):
        k = lbfgs.chunks(n, "splitk")
        assert n % k == 0 and (k == 1 or n // k >= lbfgs.MIN_CHUNK)
    assert lbfgs.chunks(3 * 512 * 512, "bmm") == 1 and lbfgs.chunks(1000, "splitk") == 1


@pytest.mark.parametrize("bounds", [None, (0.0, 1.0)])
def test_every_history_algebra_takes_the_same_steps(bounds):
    loss, _ = _separable(2, 3 * 48 * 48)
    init = torch.full((2, 3, 48, 48), 0.5)
    states = {algebra: lbfgs.minimize(loss, init, 25, budget=torch.tensor([25, 11]), bounds=bounds, memory=5,
                                      algebra=algebra) for algebra in lbfgs.ALGEBRAS}
    assert states["splitk"].history.shape[1] == lbfgs.chunks(3 * 48 * 48, "splitk") > 1
    for algebra in ("bmm", "loop"):  # the same up to the order of float32 sums (amplified over 25 steps)
        torch.testing.assert_close(states[algebra].x, states["splitk"].x, rtol=0, atol=1e-4)
        torch.testing.assert_close(states[algebra].f, states["splitk"].f, rtol=1e-5, atol=0)


@pytest.mark.parametrize("algebra", lbfgs.ALGEBRAS)
def test_a_batch_is_its_problems_run_alone(algebra):
    loss, _ = _separable(3, 3 * 40 * 40)
    init = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    budgets = [30, 12, 21]
    together = lbfgs.minimize(loss, init, 30, budget=torch.tensor(budgets), bounds=(0.0, 1.0), algebra=algebra)
    for index, budget in enumerate(budgets):
        alone = lbfgs.minimize(lambda x, i=index: _separable(3, 3 * 40 * 40)[0](torch.cat([x] * 3))[i:i + 1],
                               init[index:index + 1], budget, bounds=(0.0, 1.0), algebra=algebra)
        # torch sums one row and three rows in different orders: float noise, amplified over the steps
        torch.testing.assert_close(together.x[index], alone.x[0], rtol=0, atol=1e-3)
        torch.testing.assert_close(together.f[index], alone.f[0], rtol=1e-5, atol=0)


def test_the_reused_graph_ready_step_equals_fresh_runs_bit_for_bit():
    # The Minimizer's buffers are what a CUDA graph captures: a second problem run in them
    # (after another left its history there) must take exactly the steps of a fresh run.
    loss_a, _ = _separable(2, 3 * 48 * 48, seed=6)
    loss_b, _ = _separable(2, 3 * 48 * 48, seed=7)
    current = [loss_a]
    minimizer = lbfgs.Minimizer(lambda x: current[0](x), (2, 3, 48, 48), memory=6, bounds=(0.0, 1.0),
                                algebra="splitk")
    init_a, init_b = torch.full((2, 3, 48, 48), 0.3), torch.full((2, 3, 48, 48), 0.6)
    first = minimizer.run(init_a, 20, budget=[20, 9])
    first_x = first.x.clone()
    current[0] = loss_b
    second = minimizer.run(init_b, 17, budget=[13, 17])
    fresh_a = lbfgs.minimize(loss_a, init_a, 20, budget=torch.tensor([20, 9]), memory=6, bounds=(0.0, 1.0),
                             algebra="splitk")
    fresh_b = lbfgs.minimize(loss_b, init_b, 17, budget=torch.tensor([13, 17]), memory=6, bounds=(0.0, 1.0),
                             algebra="splitk")
    assert second is first  # the same buffers
    assert torch.equal(first_x, fresh_a.x)
    for name in ("x", "f", "g", "d", "gamma", "sy", "yy", "age", "slot", "iteration", "history"):
        assert torch.equal(getattr(second, name), getattr(fresh_b, name)), name


@contextlib.contextmanager
def _lowered_fp32_products():
    """Every switch that lets float32 products lose mantissa bits, on (then restored)."""
    matmul = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # TF32 on GPUs, bf16 for oneDNN on CPUs
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)


def test_the_history_products_stay_fp32_under_every_precision_switch():
    loss, _ = _separable(2, 3 * 48 * 48)
    state = lbfgs.minimize(loss, torch.full((2, 3, 48, 48), 0.5), 12, memory=5, algebra="splitk")
    exact = lbfgs._products(state)
    generator = torch.Generator().manual_seed(1)
    probe = torch.rand(1, 40, 4096, generator=generator), torch.rand(1, 4096, 3, generator=generator)
    seen, real_bmm = [], torch.bmm

    def spy(*args, **kwargs):  # what the backends are told at the moment of each product
        seen.append((torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision))
        return real_bmm(*args, **kwargs)

    with _lowered_fp32_products():
        lowered = torch.bmm(*probe)
        with torch.no_grad(), lbfgs.fp32_products():
            inside = torch.bmm(*probe)
            torch.bmm = spy
            try:
                guarded = lbfgs._products(state)
            finally:
                torch.bmm = real_bmm
        after = torch.bmm(*probe)
    assert seen and all(flags == ("ieee", "ieee") for flags in seen)
    for a, b in zip(guarded, exact):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert torch.equal(inside, torch.bmm(*probe))  # IEEE inside, as with no switch set
    assert torch.equal(after, lowered)  # and the process's switches restored on the way out


def test_a_run_is_the_same_whatever_precision_the_process_set():
    loss, _ = _separable(1, 3 * 48 * 48)
    init = torch.full((1, 3, 48, 48), 0.5)
    plain = lbfgs.minimize(loss, init, 25, memory=5, bounds=(0.0, 1.0))
    with _lowered_fp32_products():
        lowered = lbfgs.minimize(loss, init, 25, memory=5, bounds=(0.0, 1.0))
        probe = torch.rand(64, 4096, generator=torch.Generator().manual_seed(0))
        changes_products = not torch.equal(probe @ probe.T, (probe.double() @ probe.double().T).float())
    assert plain.x.dtype == torch.float32 and plain.history.dtype == torch.float32
    assert torch.equal(plain.x, lowered.x) and torch.equal(plain.f, lowered.f)
    if not changes_products:  # this CPU multiplies float32 exactly in any mode: nothing was at stake
        pytest.skip("float32 products are exact here under every precision setting")


def test_a_failed_capture_falls_back_to_eager_steps_and_says_why(monkeypatch, caplog):
    class Refused:
        def __enter__(self):
            raise RuntimeError("operation not permitted when stream is capturing")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: Refused())
    loss, solution = _quadratic(seed=8)
    minimizer = lbfgs.Minimizer(loss, (1, solution.numel()), memory=8)
    minimizer.graphs = True  # as on a CUDA device
    with caplog.at_level("WARNING", logger="ray_style.lbfgs"):
        state = minimizer.run(torch.zeros(1, solution.numel()), 30)
    assert minimizer.graph is None and "not permitted" in minimizer.graph_error
    assert "continuing eagerly" in caplog.text and caplog.text.count("capture") == 1  # tried once
    reference = lbfgs.minimize(loss, torch.zeros(1, solution.numel()), 30, memory=8)
    assert torch.equal(state.x, reference.x)
