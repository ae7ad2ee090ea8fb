"""L-BFGS that never reads a tensor on the host: batched, one evaluation per iteration.

``torch.optim.LBFGS`` converts losses and gradient norms to Python numbers several times per
evaluation (each a GPU synchronization) and walks its history in ~4 × history small kernels.
Here every decision is a ``torch.where`` on the device, so a frame's whole optimization is a
fixed sequence of kernels: the state lives in buffers updated in place, one step (evaluation
and update) is captured as a CUDA graph and replayed (:class:`Minimizer`), and ``B``
independent problems (frames of different chains) advance in lockstep through one batched
forward pass.

Per iteration: try ``x + t d``; accept if the loss is finite and satisfies Armijo's
sufficient decrease, else shrink ``t`` by safeguarded quadratic interpolation and retry the
same direction. An accepted pair ``(s, y)`` is stored when ``sᵀy > 0``. The direction is
``-H g`` in Byrd, Nocedal & Schnabel's compact form (1994), with ``H₀ = γI``. With ``bounds``,
steps are projected onto the box and variables held at a bound leave the quasi-Newton step.
The accepted point only ever improves, so it is the best point evaluated.

The history is ``(B, K, 2m + 2, c)``: each problem's ``n = K c`` variables in ``K`` chunks,
rows ``[0, m)`` the ring slots' ``s``, ``[m, 2m)`` their ``y``, and two scratch rows that take
a pair that is not kept (storing is then one unconditional scatter). An iteration reads the
history twice: once for every inner product it needs (the stored pairs against the new ``s``,
``y`` and the free gradient, one batched product), once to form the direction. Both are
memory-bound matrix-vector products with ``n`` ≈ 10⁶; cutting ``n`` into chunks (split-K)
gives every streaming multiprocessor its share of the history at any ``B``, where a batched
product over whole rows gets one thread block per problem (BENCHMARKS.md: 7 ms per call at
B = 2 on an H100). All of this algebra runs in float32 with IEEE products (:func:`fp32_products`),
whatever TF32 or bf16 switches the process set for the objective.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

ARMIJO = 1e-4  # sufficient decrease constant c₁ (Nocedal & Wright's usual value)
CURVATURE = 1e-6  # a pair is kept when cos∠(s, y) exceeds this: positive curvature, not rounding
FIRST_STEP = 0.05  # the first step moves the most-changed pixel by this much (of [0, 1])
ALGEBRAS = ("splitk", "bmm", "loop")  # how the history products run (benchmarks/gpu.py compares them)
GPU_ALGEBRA = "splitk"  # the default on a GPU (chosen from first principles; benchmarks/gpu.py measures all)
CHUNKS = 256  # split-K: chunks per problem, enough thread blocks for a large GPU at B = 1
MIN_CHUNK = 1024  # ... each still a long contiguous stream
WARMUP_STEPS = 3  # eager steps before a capture: compilation and libraries' lazy set-up happen here

LossFn = Callable[[Tensor], Tensor]  # (B, *shape) -> (B,), differentiable
logger = logging.getLogger(__name__)


def _lowered(switch, parents) -> bool:
    """Whether float32 products under ``switch`` may run in lower precision: its own
    ``fp32_precision`` or, where that is ``none``, the first parent's that is set."""
    for holder in (switch, *parents):
        value = getattr(holder, "fp32_precision", "none")
        if value != "none":
            return value != "ieee"
    return False


@contextlib.contextmanager
def fp32_products():
    """Matrix products in full float32 (IEEE) inside, whatever the process set.

    ``--precision tf32`` turns TF32 on for every float32 product on the GPU, and
    ``torch.set_float32_matmul_precision("medium")`` even lets a CPU multiply float32 in
    bfloat16; the optimizer's inner products must not lose those mantissa bits. Only switches
    that are lowered are touched (changing oneDNN's makes it rebuild every convolution, 0.5 s
    on a CPU), and they are put back as they were, so code that reads the older
    ``allow_tf32`` API keeps working.
    """
    saved = []
    cuda = torch.backends.cuda.matmul
    mkldnn = getattr(torch.backends, "mkldnn", None)
    for switch, parents in ((cuda, (torch.backends,)), (getattr(mkldnn, "matmul", None), (mkldnn, torch.backends))):
        if switch is None:
            continue
        try:
            if _lowered(switch, parents):
                saved.append((switch, "fp32_precision", switch.fp32_precision))
                switch.fp32_precision = "ieee"
        except (AttributeError, RuntimeError):  # torch before 2.9: only the older switch exists
            if switch is cuda and cuda.allow_tf32:
                saved.append((cuda, "allow_tf32", True))
                cuda.allow_tf32 = False
    try:
        yield
    finally:
        for switch, name, value in reversed(saved):
            setattr(switch, name, value)


def default_algebra(device) -> str:
    """:data:`GPU_ALGEBRA` on a GPU; on a CPU, where threads already share one long product, ``bmm``."""
    return GPU_ALGEBRA if torch.device(device).type == "cuda" else "bmm"


def chunks(n: int, algebra: str) -> int:
    """The number of chunks ``K`` that ``n`` variables are cut into: a divisor of ``n`` near
    :data:`CHUNKS` with chunks of at least :data:`MIN_CHUNK`, 1 unless split-K."""
    if algebra != "splitk" or n < 2 * MIN_CHUNK:
        return 1
    best = 1
    for small in range(1, math.isqrt(n) + 1):
        if n % small == 0:
            for count in (small, n // small):
                if n // count >= MIN_CHUNK and abs(math.log(count / CHUNKS)) < abs(math.log(best / CHUNKS)):
                    best = count
    return best


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample dot product of ``(B, ...)`` tensors, ``(B,)``."""
    return (a * b).flatten(1).sum(1)


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
    history: Tensor  # (B, K, 2m + 2, c): s rows [0, m), y rows [m, 2m) in ring slots, 2 scratch rows
    work: Tensor  # (B, K, 3, c): this step's s, y and free gradient
    sy: Tensor  # (B, m, m) s_iᵀ y_j
    yy: Tensor  # (B, m, m) y_iᵀ y_j
    age: Tensor  # (B, m) iteration a slot was written, -1 while empty
    slot: Tensor  # (B,) the ring slot the next stored pair goes to
    iteration: Tensor  # () evaluations done
    budget: Tensor  # (B,) evaluations each problem may use; beyond it, it stays put
    evaluated: Tensor  # (B,) evaluations each problem used: counted as they run, never more than its budget
    trial: Tensor  # (B, n) the point being evaluated (a leaf that requires grad)
    algebra: str = "bmm"  # one of ALGEBRAS

    @property
    def memory(self) -> int:
        return self.sy.shape[1]


def allocate(batch: int, n: int, memory: int, device, algebra: str = "bmm") -> LBFGSState:
    """Zeroed buffers for ``batch`` problems of ``n`` variables (filled by :func:`start`)."""
    if algebra not in ALGEBRAS:
        raise ValueError(f"unknown L-BFGS algebra {algebra!r}: use {', '.join(ALGEBRAS)}")
    k = chunks(n, algebra)

    def zeros(*shape, dtype=torch.float32):
        return torch.zeros(*shape, dtype=dtype, device=device)

    return LBFGSState(
        x=zeros(batch, n), f=zeros(batch), g=zeros(batch, n), d=zeros(batch, n), gd=zeros(batch), t=zeros(batch),
        gamma=zeros(batch), history=zeros(batch, k, 2 * memory + 2, n // k), work=zeros(batch, k, 3, n // k),
        sy=zeros(batch, memory, memory), yy=zeros(batch, memory, memory), age=zeros(batch, memory, dtype=torch.long),
        slot=zeros(batch, dtype=torch.long), iteration=zeros((), dtype=torch.long),
        budget=zeros(batch, dtype=torch.long), evaluated=zeros(batch, dtype=torch.long), trial=zeros(batch, n).requires_grad_(True), algebra=algebra)


def _chunked(state: LBFGSState, vector: Tensor) -> Tensor:
    """A ``(B, n)`` vector as ``(B, K, c)``, the history's chunking."""
    return vector.view(state.work.shape[0], state.work.shape[1], state.work.shape[3])


def _evaluate(loss_fn: LossFn, point: Tensor, shape) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        loss = loss_fn(point.view(point.shape[0], *shape))
        (grad,) = torch.autograd.grad(loss.sum(), point)
    return loss.detach().float(), grad.float()


def _free_gradient(x: Tensor, g: Tensor, bounds, out: Tensor) -> Tensor:
    """The gradient without the components that push a variable out through its bound.

    Two-metric projection (Bertsekas 1982): variables held at a bound drop out of the
    quasi-Newton step, so its coupling cannot spend the step on moves the box will undo.
    """
    if bounds is None:
        return out.copy_(g)
    held = torch.where(g > 0, x <= bounds[0], x >= bounds[1])  # where g = 0 it is 0 either way
    return torch.where(held, g.new_zeros(()), g, out=out)


def _products(state: LBFGSState) -> tuple[Tensor, Tensor]:
    """The stored pairs against this step's three vectors, ``(B, 2m, 3)``, and the vectors'
    own products, ``(B, 3, 3)``: every inner product an iteration needs, in one read of the
    history. Call under :func:`fp32_products`."""
    b, k, rows, c = state.history.shape
    pairs_rows = rows - 2
    history, work = state.history[:, :, :pairs_rows], state.work
    if state.algebra == "loop":  # one plain product per problem (cuBLAS picks its own split)
        pairs = torch.stack([history[i, 0] @ work[i, 0].T for i in range(b)])
        own = torch.stack([work[i, 0] @ work[i, 0].T for i in range(b)])
        return pairs, own
    flat_work = work.view(b * k, 3, c)
    pairs = torch.bmm(history.reshape(b * k, pairs_rows, c), flat_work.transpose(1, 2))
    own = torch.bmm(flat_work, flat_work.transpose(1, 2))
    return pairs.view(b, k, pairs_rows, 3).sum(1), own.view(b, k, 3, 3).sum(1)


def _combine(state: LBFGSState, weights: Tensor) -> Tensor:
    """``Σ_i weights_i · history row i``: ``(B, 2m) -> (B, K, c)``. Call under :func:`fp32_products`."""
    b, k, rows, c = state.history.shape
    history = state.history[:, :, :rows - 2]
    if state.algebra == "loop":
        return torch.stack([weights[i:i + 1] @ history[i, 0] for i in range(b)]).view(b, k, c)
    left = weights[:, None, None, :].expand(b, k, 1, rows - 2).reshape(b * k, 1, rows - 2)
    return torch.bmm(left, history.reshape(b * k, rows - 2, c)).view(b, k, c)


def _weights(state: LBFGSState, p_s: Tensor, p_y: Tensor) -> Tensor:
    """``H g = γ g + Σ_i w_i h_i`` over the history rows ``h = [S; Y]``: the compact form's
    ``w`` ``(B, 2m)`` from ``p_s = Sᵀg``, ``p_y = Yᵀg`` ``(B, m)``. Empty slots are decoupled
    with unit diagonals in ``R`` and weigh nothing."""
    m = state.memory
    valid = state.age >= 0  # (B, m)
    pair = valid[:, :, None] & valid[:, None, :]
    # R_ij = s_iᵀy_j when slot i was written no later than slot j (upper triangular in
    # chronological order; LU solves it in slot order).
    older = state.age[:, :, None] <= state.age[:, None, :]
    eye = torch.eye(m, dtype=p_s.dtype, device=p_s.device)
    r = torch.where(pair & older, state.sy, 0.0) + eye * (~valid)[:, None, :]
    diag = torch.where(valid, torch.diagonal(state.sy, dim1=1, dim2=2), 1.0)[:, :, None]
    gamma = state.gamma[:, None, None]
    p1 = torch.where(valid, p_s, 0.0)[:, :, None]
    p2 = gamma * torch.where(valid, p_y, 0.0)[:, :, None]
    lu, pivots, _ = torch.linalg.lu_factor_ex(r)
    u = torch.linalg.lu_solve(lu, pivots, p1)  # R⁻¹ p1
    v = diag * u + gamma * torch.bmm(state.yy, u) - p2
    q1 = torch.linalg.lu_solve(lu, pivots, v, adjoint=True)  # R⁻ᵀ v
    return torch.cat([q1, -gamma * u], 1)[:, :, 0]


def start(loss_fn: LossFn, init: Tensor, budget: Tensor | int | list[int], memory: int,
          bounds: tuple[float, float] | None = None, *, state: LBFGSState | None = None,
          algebra: str | None = None) -> LBFGSState:
    """Evaluate ``init`` ``(B, ...)`` once and set up the state (the first evaluation), in
    ``state``'s buffers when given (they must fit), else in new ones."""
    batch, shape = init.shape[0], init.shape[1:]
    if state is None:
        state = allocate(batch, init[0].numel(), memory, init.device, algebra or default_algebra(init.device))
    with torch.no_grad():
        state.x.copy_(init.detach().reshape(batch, -1))
        state.trial.copy_(state.x)
    f, g = _evaluate(loss_fn, state.trial, shape)
    with torch.no_grad(), fp32_products():
        state.f.copy_(f)
        state.g.copy_(g)
        free_g = _free_gradient(state.x, state.g, bounds, torch.empty_like(g))
        # γ₀ from the gradient's scale: Caffe-scale losses have gradients of 1e6 and more, where
        # torch's first step (1/|g|₁) is float32 noise. The largest pixel change is FIRST_STEP.
        state.gamma.copy_(FIRST_STEP / free_g.abs().amax(1).clamp_min(1e-30))
        torch.mul(free_g, -state.gamma[:, None], out=state.d)
        state.gd.copy_(_dot(free_g, state.d))
        state.t.fill_(1.0)
        for buffer in (state.history, state.work, state.sy, state.yy, state.slot):
            buffer.zero_()
        state.age.fill_(-1)
        state.iteration.fill_(1)
        state.evaluated.fill_(1)
        if isinstance(budget, int):
            state.budget.fill_(budget)
        else:  # the one copy from the host: the budgets
            state.budget.copy_(torch.as_tensor(budget, device=state.budget.device).expand(batch))
    return state


@torch.no_grad()
def step(loss_fn: LossFn, state: LBFGSState, shape, bounds: tuple[float, float] | None = None) -> None:
    """One evaluation: try ``x + t d``, then accept (and learn) or shrink ``t``. In place,
    reading and writing only ``state``'s buffers: what :class:`Minimizer` captures."""
    torch.addcmul(state.x, state.t[:, None], state.d, out=state.trial)
    if bounds is not None:
        state.trial.clamp_(*bounds)
    f_new, g_new = _evaluate(loss_fn, state.trial, shape)
    with fp32_products():
        _update(state, f_new, g_new, bounds)


def _update(state: LBFGSState, f_new: Tensor, g_new: Tensor, bounds) -> None:
    m = state.memory
    x, g, d, trial = (_chunked(state, v) for v in (state.x, state.g, state.d, state.trial.detach()))
    g_new = _chunked(state, g_new)
    s, y, free_g = state.work.unbind(2)
    torch.sub(trial, x, out=s)
    torch.sub(g_new, g, out=y)
    active = state.iteration < state.budget
    state.evaluated.add_(active)
    # Armijo along the step actually taken (a projected one may be shorter than t d).
    sufficient = f_new <= state.f + ARMIJO * torch.clamp(_dot(g, s), max=0.0)
    accept = active & torch.isfinite(f_new) & sufficient
    taken = accept[:, None, None]
    torch.where(taken, trial, x, out=x)
    torch.where(taken, g_new, g, out=g)
    state.f.copy_(torch.where(accept, f_new, state.f))
    _free_gradient(x, g, bounds, out=free_g)
    pairs, own = _products(state)  # against the history before this step's pair is stored

    ss_new, sy_new, yy_new = own[:, 0, 0], own[:, 0, 1], own[:, 1, 1]
    # Curvature along the step, judged without units: cos∠(s, y) > CURVATURE. (A threshold on
    # sᵀy / yᵀy, which has the units of the inverse Hessian, dropped every pair once the loss's
    # scale made the Hessian larger than its reciprocal: a large style weight meant steepest
    # descent, and less style.)
    store = accept & (sy_new > CURVATURE * ss_new.sqrt() * yy_new.sqrt())
    slot = state.slot
    here = torch.arange(m, device=slot.device) == slot[:, None]  # (B, m): the slot a kept pair takes
    kept = here & store[:, None]
    # The kept pair's row and column of SᵀY and YᵀY: products with the other pairs, and its own.
    row_sy = torch.where(here, sy_new[:, None], pairs[:, m:, 0])  # s_newᵀ y_j
    col_sy = torch.where(here, sy_new[:, None], pairs[:, :m, 1])  # s_jᵀ y_new
    col_yy = torch.where(here, yy_new[:, None], pairs[:, m:, 1])  # y_jᵀ y_new
    state.sy.copy_(torch.where(kept[:, None, :], col_sy[:, :, None],
                               torch.where(kept[:, :, None], row_sy[:, None, :], state.sy)))
    state.yy.copy_(torch.where(kept[:, None, :], col_yy[:, :, None],
                               torch.where(kept[:, :, None], col_yy[:, None, :], state.yy)))
    state.age.copy_(torch.where(kept, state.iteration, state.age))
    state.gamma.copy_(torch.where(store, sy_new / yy_new.clamp_min(1e-30), state.gamma))
    # A kept pair goes to its slot, a discarded one to the scratch rows: one unconditional write.
    targets = torch.where(store[:, None], torch.stack([slot, slot + m], 1),
                          torch.arange(2 * m, 2 * m + 2, device=slot.device))
    batch = torch.arange(state.x.shape[0], device=slot.device)[:, None]
    state.history[batch, :, targets] = state.work[:, :, :2].transpose(1, 2)
    state.slot.copy_(torch.where(store, (slot + 1) % m, slot))

    # -H g from the new history: Sᵀg and Yᵀg are the old products, but the kept pair's own.
    p_s = torch.where(kept, own[:, 0, 2, None], pairs[:, :m, 2])
    p_y = torch.where(kept, own[:, 1, 2, None], pairs[:, m:, 2])
    weights = _weights(state, p_s, p_y)
    gg, gamma = own[:, 2, 2], state.gamma
    gd = -(gamma * gg + (weights * torch.cat([p_s, p_y], 1)).sum(1))  # gᵀd without another pass
    # Not a descent direction (or not finite): scaled steepest descent, i.e. no pair's weight.
    fallback = ~(gd < 0)
    weights = torch.where(fallback[:, None], 0.0, weights)
    gd = torch.where(fallback, -gamma * gg, gd)
    direction = torch.addcmul(_combine(state, -weights), -gamma[:, None, None], free_g)
    if bounds is not None:
        direction = torch.where(free_g == 0, 0.0, direction)
    torch.where(taken, direction, d, out=d)
    state.gd.copy_(torch.where(accept, gd, state.gd))
    # Rejected: the minimizer of the quadratic through f(x), gᵀd and f(x + t d), kept within
    # [0.1 t, 0.5 t]; 0.1 t when the trial was not finite.
    t = state.t
    curvature = f_new - state.f - state.gd * t
    shrunk = torch.nan_to_num(-state.gd * t * t / (2 * curvature), nan=0.0, posinf=0.0, neginf=0.0)
    shrunk = torch.minimum(torch.maximum(shrunk, 0.1 * t), 0.5 * t)
    state.t.copy_(torch.where(accept, 1.0, torch.where(active, shrunk, t)))
    state.iteration.add_(1)


class Minimizer:
    """L-BFGS for problems of one batch shape, in buffers kept from run to run.

    With ``graphs`` on a CUDA device, after ``warmup`` eager steps (where torch.compile and
    cuBLAS/cuDNN do their one-off set-up) one whole step, evaluation and update, is captured
    as a CUDA graph and replayed from then on, in this run and every later one: ``loss_fn``
    must read only tensors that stay where they are (refill them with ``copy_`` between runs).
    If the capture fails, the steps stay eager; the reason is logged and kept in ``graph_error``.
    """

    def __init__(self, loss_fn: LossFn, shape, *, memory: int = 20, bounds: tuple[float, float] | None = None,
                 device="cpu", graphs: bool = False, algebra: str | None = None, warmup: int = WARMUP_STEPS):
        self.loss_fn, self.shape, self.memory, self.bounds = loss_fn, tuple(shape), memory, bounds
        self.device = torch.device(device)
        self.graphs = graphs and self.device.type == "cuda"
        self.algebra = algebra or default_algebra(self.device)
        self.warmup = max(1, warmup)
        self.state: LBFGSState | None = None
        self.graph = None
        self.graph_error: str | None = None
        self.eager_steps = 0

    def run(self, init: Tensor, evaluations: int, *, budget: Tensor | list[int] | None = None,
            on_step: Callable[[LBFGSState], None] | None = None) -> LBFGSState:
        """:func:`minimize` in this minimizer's buffers; the returned state is overwritten by
        the next run (copy what you keep)."""
        if tuple(init.shape) != self.shape:
            raise ValueError(f"this minimizer is for shape {self.shape}, got {tuple(init.shape)}")
        if self.bounds is not None:
            init = init.clamp(*self.bounds)
        self.state = start(self.loss_fn, init, evaluations if budget is None else budget, self.memory,
                           self.bounds, state=self.state, algebra=self.algebra)
        for _ in range(evaluations - 1):
            self._step()
            if on_step is not None:
                on_step(self.state)
        return self.state

    def _step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        step(self.loss_fn, self.state, self.shape[1:], self.bounds)
        self.eager_steps += 1
        if self.graphs and self.graph_error is None and self.eager_steps >= self.warmup:
            self._capture()

    def _capture(self) -> None:
        """Record one step (not run: the state is unchanged until the first replay)."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                step(self.loss_fn, self.state, self.shape[1:], self.bounds)
        except Exception as error:  # any refusal (a host sync, an uncapturable library call): stay eager
            self.graph_error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            logger.warning("CUDA graph capture of the L-BFGS step failed, continuing eagerly: %s", self.graph_error)
            return
        self.graph = graph


def minimize(loss_fn: LossFn, init: Tensor, evaluations: int, *, memory: int = 20,
             budget: Tensor | None = None, bounds: tuple[float, float] | None = None,
             on_step: Callable[[LBFGSState], None] | None = None, graphs: bool | None = None,
             algebra: str | None = None) -> LBFGSState:
    """Minimize ``loss_fn`` from ``init`` ``(B, ...)`` with exactly ``evaluations`` evaluations.

    ``budget`` (``(B,)``, ≤ ``evaluations``) lets problems of one batch stop earlier: past its
    budget a problem's point is frozen. ``state.x`` holds the best points, ``state.f`` their
    losses. ``on_step`` sees the state after each evaluation (it may read it on the host; the
    loop itself never does). ``graphs`` (default: on a CUDA device) replays the step as a
    CUDA graph after a few eager ones; ``algebra`` picks how the history products run
    (:data:`ALGEBRAS`; default split-K on a GPU, ``bmm`` on a CPU).
    """
    minimizer = Minimizer(loss_fn, init.shape, memory=memory, bounds=bounds, device=init.device,
                          graphs=init.is_cuda if graphs is None else graphs, algebra=algebra)
    return minimizer.run(init, evaluations, budget=budget, on_step=on_step)


__all__ = ["LBFGSState", "Minimizer", "minimize", "start", "step", "allocate", "fp32_products", "chunks",
           "default_algebra", "ALGEBRAS", "GPU_ALGEBRA", "ARMIJO", "FIRST_STEP", "WARMUP_STEPS"]
