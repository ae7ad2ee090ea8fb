"""L-BFGS that never reads a tensor on the host: batched, one evaluation per iteration.

``torch.optim.LBFGS`` converts losses and gradient norms to Python numbers several times per
evaluation (each a GPU synchronization) and walks its history in ~4 × history small kernels.
Here every decision is a ``torch.where`` on the device, so a frame's whole optimization is a
fixed sequence of kernels the host can queue ahead (the state is updated in place, ready for
CUDA-graph capture, which is not tried yet), and ``B`` independent problems (frames of
different chains) advance in lockstep through one batched forward pass.

Per iteration: try ``x + t d``; accept if the loss is finite and satisfies Armijo's
sufficient decrease, else shrink ``t`` by safeguarded quadratic interpolation and retry the
same direction. An accepted pair ``(s, y)`` is stored when ``sᵀy > 0``. The direction is
``-H g`` in Byrd, Nocedal & Schnabel's compact form (1994), with ``H₀ = γI``: two passes
over the history per iteration instead of a sequential two-loop recursion. With ``bounds``,
steps are projected onto the box and variables held at a bound leave the quasi-Newton step.
The accepted point only ever improves, so it is the best point evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

ARMIJO = 1e-4  # sufficient decrease constant c₁ (Nocedal & Wright's usual value)
FIRST_STEP = 0.05  # the first step moves the most-changed pixel by this much (of [0, 1])

LossFn = Callable[[Tensor], Tensor]  # (B, *shape) -> (B,), differentiable


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample dot product of ``(B, n)`` tensors, ``(B,)``."""
    return (a * b).sum(1)


@dataclass
class LBFGSState:
    """Everything one batch of problems carries between iterations, as device tensors that
    are updated in place (so a captured CUDA graph can replay :func:`step`)."""

    x: Tensor  # (B, n) accepted points
    f: Tensor  # (B,) their losses
    g: Tensor  # (B, n) their gradients
    d: Tensor  # (B, n) search directions
    gd: Tensor  # (B,) gᵀd (negative)
    t: Tensor  # (B,) step lengths to try next
    gamma: Tensor  # (B,) H₀ = γI
    history: Tensor  # (B, 2m, n): rows [0, m) are s, rows [m, 2m) are y, in ring slots
    sy: Tensor  # (B, m, m) s_iᵀ y_j
    yy: Tensor  # (B, m, m) y_iᵀ y_j
    age: Tensor  # (B, m) iteration a slot was written, -1 while empty
    slot: Tensor  # (B,) the ring slot the next stored pair goes to
    iteration: Tensor  # () evaluations done
    budget: Tensor  # (B,) evaluations each problem may use; beyond it, it stays put
    trial: Tensor  # (B, n) the point being evaluated (a leaf that requires grad)

    @property
    def memory(self) -> int:
        return self.sy.shape[1]


def _evaluate(loss_fn: LossFn, point: Tensor, shape) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        loss = loss_fn(point.view(point.shape[0], *shape))
        (grad,) = torch.autograd.grad(loss.sum(), point)
    return loss.detach().float(), grad.float()


def _free_gradient(x: Tensor, g: Tensor, bounds) -> Tensor:
    """The gradient without the components that push a variable out through its bound.

    Two-metric projection (Bertsekas 1982): variables held at a bound drop out of the
    quasi-Newton step, so its coupling cannot spend the step on moves the box will undo.
    """
    if bounds is None:
        return g
    held = ((x <= bounds[0]) & (g > 0)) | ((x >= bounds[1]) & (g < 0))
    return torch.where(held, torch.zeros_like(g), g)


def _direction(state: LBFGSState, g: Tensor) -> Tensor:
    """``-H g`` in compact form; empty slots are decoupled with unit diagonals in ``R``."""
    m = state.memory
    valid = state.age >= 0  # (B, m)
    pair = valid[:, :, None] & valid[:, None, :]
    # R_ij = s_iᵀy_j when slot i was written no later than slot j (upper triangular in
    # chronological order; LU solves it in slot order).
    older = state.age[:, :, None] <= state.age[:, None, :]
    eye = torch.eye(m, dtype=g.dtype, device=g.device)
    r = torch.where(pair & older, state.sy, torch.zeros_like(state.sy)) + eye * (~valid)[:, None, :]
    diag = torch.where(valid, torch.diagonal(state.sy, dim1=1, dim2=2), torch.ones_like(state.gamma)[:, None])
    gamma = state.gamma[:, None]
    products = torch.bmm(state.history, g[:, :, None])[:, :, 0]  # (B, 2m): Sᵀg, Yᵀg
    p1, p2 = products[:, :m], gamma * products[:, m:]
    u = torch.linalg.solve_ex(r, p1[:, :, None])[0]  # R⁻¹ p1
    v = (diag[:, :, None] * u + gamma[:, :, None] * torch.bmm(state.yy, u)) - p2[:, :, None]
    q1 = torch.linalg.solve_ex(r.transpose(1, 2), v)[0][:, :, 0]  # R⁻ᵀ v
    q2 = -u[:, :, 0]
    weights = torch.cat([q1, gamma * q2], 1)[:, None, :]  # (B, 1, 2m)
    hg = gamma * g + torch.bmm(weights, state.history)[:, 0]
    return -hg


def start(loss_fn: LossFn, init: Tensor, budget: Tensor | int, memory: int,
          bounds: tuple[float, float] | None = None) -> LBFGSState:
    """Evaluate ``init`` ``(B, ...)`` once and set up the state (the first evaluation)."""
    batch, shape = init.shape[0], init.shape[1:]
    x = init.detach().reshape(batch, -1).float().clone()
    trial = x.clone().requires_grad_(True)
    f, g = _evaluate(loss_fn, trial, shape)
    # γ₀ from the gradient's scale: Caffe-scale losses have gradients of 1e6 and more, where
    # torch's first step (1/|g|₁) is float32 noise. The largest pixel change is FIRST_STEP.
    free_g = _free_gradient(x, g, bounds)
    gamma = FIRST_STEP / free_g.abs().amax(1).clamp_min(1e-30)
    d = -gamma[:, None] * free_g
    n = x.shape[1]
    device = x.device
    budget = torch.as_tensor(budget, device=device).expand(batch).clone()
    return LBFGSState(
        x=x, f=f, g=g, d=d, gd=_dot(free_g, d), t=torch.ones(batch, device=device), gamma=gamma,
        history=torch.zeros(batch, 2 * memory, n, device=device),
        sy=torch.zeros(batch, memory, memory, device=device), yy=torch.zeros(batch, memory, memory, device=device),
        age=torch.full((batch, memory), -1, dtype=torch.long, device=device),
        slot=torch.zeros(batch, dtype=torch.long, device=device),
        iteration=torch.ones((), dtype=torch.long, device=device), budget=budget, trial=trial)


@torch.no_grad()
def step(loss_fn: LossFn, state: LBFGSState, shape, bounds: tuple[float, float] | None = None) -> None:
    """One evaluation: try ``x + t d``, then accept (and learn) or shrink ``t``. In place."""
    m, rows = state.memory, torch.arange(state.x.shape[0], device=state.x.device)
    trial = state.x + state.t[:, None] * state.d
    if bounds is not None:
        trial = trial.clamp(*bounds)
    state.trial.copy_(trial)
    f_new, g_new = _evaluate(loss_fn, state.trial, shape)
    active = state.iteration < state.budget
    s = trial - state.x
    # Armijo along the step actually taken (a projected one may be shorter than t d).
    sufficient = f_new <= state.f + ARMIJO * torch.clamp(_dot(state.g, s), max=0.0)
    accept = active & torch.isfinite(f_new) & sufficient
    y = g_new - state.g
    sy_new, yy_new = _dot(s, y), _dot(y, y)
    store = accept & (sy_new > 1e-10 * yy_new)

    slot = state.slot
    state.history[rows, slot] = torch.where(store[:, None], s, state.history[rows, slot])
    state.history[rows, m + slot] = torch.where(store[:, None], y, state.history[rows, m + slot])
    # New row and column of SᵀY and YᵀY for the written slot (the diagonal agrees in both).
    ys = torch.bmm(state.history[:, m:], torch.stack([s, y], 2))  # (B, m, 2): Yᵀs, Yᵀy
    sy_col = torch.bmm(state.history[:, :m], y[:, :, None])[:, :, 0]  # Sᵀy
    keep = ~store[:, None]
    state.sy[rows, slot] = torch.where(keep, state.sy[rows, slot], ys[:, :, 0])
    state.sy[rows, :, slot] = torch.where(keep, state.sy[rows, :, slot], sy_col)
    state.yy[rows, slot] = torch.where(keep, state.yy[rows, slot], ys[:, :, 1])
    state.yy[rows, :, slot] = torch.where(keep, state.yy[rows, :, slot], ys[:, :, 1])
    state.age[rows, slot] = torch.where(store, state.iteration, state.age[rows, slot])
    state.slot.copy_(torch.where(store, (slot + 1) % m, slot))
    state.gamma.copy_(torch.where(store, sy_new / yy_new.clamp_min(1e-30), state.gamma))

    state.x.copy_(torch.where(accept[:, None], state.trial.detach(), state.x))
    state.f.copy_(torch.where(accept, f_new, state.f))
    state.g.copy_(torch.where(accept[:, None], g_new, state.g))
    free_g = _free_gradient(state.x, state.g, bounds)
    d = _direction(state, free_g)
    if bounds is not None:
        d = torch.where(free_g == 0, torch.zeros_like(d), d)
    gd = _dot(free_g, d)
    # Not a descent direction (or not finite): fall back to scaled steepest descent.
    fallback = ~(gd < 0)
    d = torch.where(fallback[:, None], -state.gamma[:, None] * free_g, d)
    gd = torch.where(fallback, -state.gamma * _dot(free_g, free_g), gd)
    state.d.copy_(torch.where(accept[:, None], d, state.d))
    state.gd.copy_(torch.where(accept, gd, state.gd))
    # Rejected: the minimizer of the quadratic through f(x), gᵀd and f(x + t d), kept within
    # [0.1 t, 0.5 t]; 0.1 t when the trial was not finite.
    t = state.t
    curvature = f_new - state.f - state.gd * t
    shrunk = torch.nan_to_num(-state.gd * t * t / (2 * curvature), nan=0.0, posinf=0.0, neginf=0.0)
    shrunk = torch.minimum(torch.maximum(shrunk, 0.1 * t), 0.5 * t)
    state.t.copy_(torch.where(accept, torch.ones_like(t), torch.where(active, shrunk, t)))
    state.iteration.add_(1)


def minimize(loss_fn: LossFn, init: Tensor, evaluations: int, *, memory: int = 20,
             budget: Tensor | None = None, bounds: tuple[float, float] | None = None,
             on_step: Callable[[LBFGSState], None] | None = None) -> LBFGSState:
    """Minimize ``loss_fn`` from ``init`` ``(B, ...)`` with exactly ``evaluations`` evaluations.

    ``budget`` (``(B,)``, ≤ ``evaluations``) lets problems of one batch stop earlier: past its
    budget a problem's point is frozen. ``state.x`` holds the best points, ``state.f`` their
    losses. ``on_step`` sees the state after each evaluation (it may read it on the host; the
    loop itself never does).
    """
    shape = init.shape[1:]
    if bounds is not None:
        init = init.clamp(*bounds)
    state = start(loss_fn, init, evaluations if budget is None else budget, memory, bounds)
    for _ in range(evaluations - 1):
        step(loss_fn, state, shape, bounds)
        if on_step is not None:
            on_step(state)
    return state


__all__ = ["LBFGSState", "minimize", "start", "step", "ARMIJO", "FIRST_STEP"]
