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
