"""L-BFGS with a strong-Wolfe line search in NumPy: a port of PyTorch's `torch.optim.LBFGS`.

Ported from torch/optim/lbfgs.py (PyTorch 2.x, BSD-3-Clause license, Copyright (c) Facebook, Inc. and its
affiliates and the PyTorch contributors; itself ported from torch7's optim and minFunc): the same algorithm,
options, stopping rules, `_cubic_interpolate` and `_strong_wolfe`, on one flat float32 parameter vector. It lets
the linear head be fitted without importing torch (whose optimizer step also imports torch._dynamo, ~0.9 s).

The arithmetic is torch's too, so the iterates are the ones torch.optim.LBFGS produced, bit for bit on the AVX-512
CPU measured (tests/core/test_lbfgs.py), with one exception: torch's float32 `sqrt` (MKL VML, up to 0.75 ulp off)
is not correctly rounded and np.sqrt is; where `_cubic_interpolate` meets a value they round differently
(~1 in 6) the iterates part in the last bits (same optimum: seed 2 of the digits demo, |dW| <= 5e-6).
- vectors are float32; a scalar torch holds in a one-element float32 tensor (a dot product, `ro`, `H_diag`, a
  step computed from them) is a np.float32 here, a Python float stays a Python float. Under NumPy 2's promotion
  (NEP 50) a Python float meeting a np.float32 is rounded to float32 first: torch's rule for a Python scalar
  meeting a tensor. (NumPy 1 computes those mixed scalars in float64: a valid L-BFGS, not torch's last bits.)
- `p.add_(d, alpha=t)` is a fused multiply-add in torch (one rounding): `_axpy`.
- `python_float / tensor` is `tensor.reciprocal() * python_float` in torch (two roundings): `_rdiv`.
- `tensor.dot` is MKL's sdot and `tensor.abs().sum()` torch's cascade sum: `_dot` and `_cascade_sum` add in
  their order (a plain np.dot or np.sum rounds differently in the last bit, and L-BFGS amplifies it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

F32 = np.float32
Closure = Callable[[np.ndarray], tuple[float, np.ndarray]]  # x -> (loss, gradient: a new float32 array)


@dataclass
class LBFGSResult:
    x: np.ndarray  # float32, the final iterate
    n_iter: int  # iterations, torch's state["n_iter"]
    func_evals: int  # closure calls, torch's state["func_evals"]
    loss: float  # the loss at x


def _dot(x: np.ndarray, y: np.ndarray) -> np.float32:
    """float32 dot product in the order of MKL's AVX-512 sdot (what torch.dot calls) on the 64-byte aligned
    vectors torch allocates: products rounded to float32, summed in 16 lanes (a last block of 8, then of 4,
    then single elements into lane 0), lanes folded as ((l0..3 + l4..7) + l8..11) + l12..15, then
    (a0 + a2) + (a1 + a3). Measured against torch.dot, not documented by Intel."""
    p = x * y
    n = len(p)
    main = n - n % 16
    # Over rows, NumPy adds row after row (never pairwise): lane-wise running sums, as the SIMD loop.
    acc = np.add.reduce(p[:main].reshape(-1, 16), axis=0) if main else np.zeros(16, F32)
    i = main
    for width in (8, 4):
        if i + width <= n:
            acc[:width] += p[i : i + width]
            i += width
    for v in p[i:]:
        acc[0] += v
    q = acc[0:4] + acc[4:8]
    q += acc[8:12]
    q += acc[12:16]
    return (q[0] + q[2]) + (q[1] + q[3])


def _axpy(a, x: np.ndarray, y: np.ndarray, x64: np.ndarray | None = None) -> np.ndarray:
    """float32(a * x + y) rounded once, as torch's `y.add_(x, alpha=a)` (a fused multiply-add; alpha is rounded
    to float32 first). In float64 the product is exact and the sum rounds once; converting to float32 rounds
    again, which is wrong only where the float64 sum lies exactly halfway between two float32s: those few are
    redone from the exact rounding error (TwoSum). `x64`: x already in float64."""
    p = (x.astype(np.float64) if x64 is None else x64) * float(F32(a))
    s = p + y
    out = s.astype(F32)
    tie = (s.view(np.int64) & 0x1FFFFFFF) == 0x10000000  # the 29 mantissa bits float32 drops: exactly 1/2 ulp
    if tie.any():
        idx = np.flatnonzero(tie)
        ps, cs, ss = p[idx], y[idx].astype(np.float64), s[idx]
        bb = ss - ps
        err = (ps - (ss - bb)) + (cs - bb)  # a * x + y - s, exactly
        out[idx] = np.where(err == 0, ss, np.nextafter(ss, np.where(err > 0, np.inf, -np.inf))).astype(F32)
    return out


def _rdiv(a, b):
    """`a / b` as torch computes it: a Python number over a float32 tensor is `b.reciprocal() * a`."""
    if isinstance(b, np.float32) and not isinstance(a, np.float32):
        return (F32(1) / b) * F32(a)
    return a / b


def _cascade_sum(x: np.ndarray) -> np.float32:
    """`torch.sum` of a 1-D float32 tensor on CPU (ATen's cascade_sum, AVX2 kernel: torch does not dispatch sum
    to AVX-512): 8-lane vectors summed by `_row_sum`, then the leftover elements, then the 8 lanes, in order."""
    n = len(x)
    if n < 8:
        return _row_sum(x[:, None])[0]
    vecs = n // 8
    lanes = _row_sum(x[: vecs * 8].reshape(vecs, 8))
    total = F32(0)
    for v in x[vecs * 8 :]:
        total += v
    for v in lanes:
        total += v
    return total


def _row_sum(rows: np.ndarray) -> np.ndarray:
    """ATen's row_sum over rows [m, L]: four interleaved partial sums (multi_row_sum), leftovers into the first."""
    m = len(rows) // 4
    parts = _multi_row_sum(rows[: m * 4].reshape(m, 4, rows.shape[1]))
    for r in rows[m * 4 :]:
        parts[0] += r
    for k in range(1, 4):
        parts[0] += parts[k]
    return parts[0]


def _multi_row_sum(rows: np.ndarray, levels: int = 4) -> np.ndarray:
    """ATen's multi_row_sum: running sums of blocks of 2^p rows, carried up a 4-level cascade."""
    size = len(rows)
    power = max(4, (size - 1).bit_length() // levels if size > 1 else 0)
    step, mask = 1 << power, (1 << power) - 1
    acc = np.zeros((levels, *rows.shape[1:]), F32)
    i = 0
    while i + step <= size:
        acc[0] += np.add.reduce(rows[i : i + step], axis=0)  # acc[0] is 0 here: a running sum from zero
        i += step
        for j in range(1, levels):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (mask << (j * power)):
                break
    if i < size:
        acc[0] += np.add.reduce(rows[i:], axis=0)
    for j in range(1, levels):
        acc[0] += acc[j]
    return acc[0]


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    # ported from torch.optim.lbfgs (itself from https://github.com/torch/optim/blob/master/polyinterp.lua)
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    # Most common case: cubic interpolation of 2 points with function and derivative values for both.
    d1 = g1 + g2 - _rdiv(3 * (f1 - f2), x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    # ported from torch.optim.lbfgs (itself from https://github.com/torch/optim/blob/master/lswolfe.lua)
    d_norm = np.abs(d).max()
    f_new, g_new = obj_func(x, t, d)  # evaluate objective and gradient using initial step
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)
    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket_gtd = None  # torch leaves it unbound where the zoom below does not run
    while ls_iter < max_ls:
        # check conditions
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        # next step
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    br = (bracket, bracket_f, bracket_g, bracket_gtd)
    low_pos, ls_func_evals = _zoom(
        obj_func, x, d, f, gtd, d_norm, br, done, ls_iter, ls_func_evals, c1, c2, tolerance_change, max_ls
    )
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _zoom(obj_func, x, d, f, gtd, d_norm, br, done, ls_iter, ls_func_evals, c1, c2, tolerance_change, max_ls):
    """The zoom phase of `_strong_wolfe`: shrinks the bracket (in place) to a point satisfying the criteria.
    Returns (position of the low point in the bracket, function evaluations so far)."""
    bracket, bracket_f, bracket_g, bracket_gtd = br
    insuf_progress = False
    # find high and low points in bracket
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # line-search bracket is so small
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        # compute new trial value
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # test that we are making sufficient progress: if `t` is so close to a boundary, mark insufficient
        # progress, and if we have made insufficient progress in the last step or `t` is at one of the
        # boundaries, move `t` to a position `0.1 * len(bracket)` away from the nearest boundary point.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            # interpolation close to boundary
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                # evaluate at 0.1 away from boundary
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        # Evaluate new point
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos], bracket_gtd[high_pos] = (
                t,
                f_new,
                g_new,
                gtd_new,
            )
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                # Wolfe conditions satisfied
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            # new point becomes new low
            bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos], bracket_gtd[low_pos] = t, f_new, g_new, gtd_new
    return low_pos, ls_func_evals


class _History:
    """The correction pairs (y, s), 1 / (y.s) and the initial inverse-Hessian scale, as torch keeps them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.old_dirs: list[tuple[np.ndarray, np.ndarray]] = []  # y, and y in float64 for `_axpy`
        self.old_stps: list[tuple[np.ndarray, np.ndarray]] = []
        self.ro: list[np.float32] = []
        self.h_diag = 1

    def update(self, y: np.ndarray, s: np.ndarray) -> None:
        ys = _dot(y, s)  # y*s
        if ys > 1e-10:
            # updating memory
            if len(self.old_dirs) == self.size:
                # shift history by one (limited-memory)
                self.old_dirs.pop(0)
                self.old_stps.pop(0)
                self.ro.pop(0)
            # store new direction/step
            self.old_dirs.append((y, y.astype(np.float64)))
            self.old_stps.append((s, s.astype(np.float64)))
            self.ro.append(_rdiv(1.0, ys))
            # update scale of initial Hessian approximation
            self.h_diag = ys / _dot(y, y)  # (y*y)

    def direction(self, flat_grad: np.ndarray) -> np.ndarray:
        """The approximate (L-BFGS) inverse Hessian times the negative gradient: the two-loop recursion."""
        num_old = len(self.old_dirs)
        al = [None] * num_old
        q = -flat_grad
        for i in range(num_old - 1, -1, -1):
            al[i] = _dot(self.old_stps[i][0], q) * self.ro[i]
            q = _axpy(-al[i], self.old_dirs[i][0], q, self.old_dirs[i][1])
        # multiply by initial Hessian; r/d is the final direction
        r = q * self.h_diag
        for i in range(num_old):
            be_i = _dot(self.old_dirs[i][0], r) * self.ro[i]
            r = _axpy(al[i] - be_i, self.old_stps[i][0], r, self.old_stps[i][1])
        return r


def _directional_evaluate(closure: Closure, x: np.ndarray, t, d: np.ndarray) -> tuple[float, np.ndarray]:
    loss, flat_grad = closure(_axpy(t, d, x))
    return float(loss), flat_grad


def _move(closure: Closure, x, t, d, loss, flat_grad, gtd, line_search: bool, max_ls: int, evaluate: bool):
    """Step along d from x: by the strong-Wolfe line search, or by t (then evaluated unless `evaluate` is
    False: torch skips it on the last iteration). Returns x, loss, flat_grad, t, evaluations made."""
    if line_search:  # perform line search, using user function
        loss, flat_grad, t, ls_func_evals = _strong_wolfe(
            lambda x_, t_, d_: _directional_evaluate(closure, x_, t_, d_), x, t, d, loss, flat_grad, gtd, max_ls=max_ls
        )
        return _axpy(t, d, x), loss, flat_grad, t, ls_func_evals
    x = _axpy(t, d, x)  # no line search, simply move with fixed-step
    if not evaluate:
        return x, loss, flat_grad, t, 0
    loss, flat_grad = closure(x)
    return x, float(loss), flat_grad, t, 1


def minimize(
    closure: Closure,
    x0: np.ndarray,
    *,
    lr: float = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> LBFGSResult:
    """One `torch.optim.LBFGS(...).step(closure)` from x0 (same options and defaults), on a flat float32 vector.
    `closure(x)` returns the loss and its gradient at x (a new float32 array each call)."""
    if line_search_fn not in (None, "strong_wolfe"):
        raise RuntimeError("only 'strong_wolfe' is supported")
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    x = np.array(x0, dtype=F32).ravel()
    loss, flat_grad = closure(x)  # evaluate initial f(x) and df/dx
    loss, current_evals = float(loss), 1
    if np.abs(flat_grad).max() <= tolerance_grad:  # optimal condition
        return LBFGSResult(x, 0, current_evals, loss)
    history = _History(history_size)
    d, t, prev_flat_grad, n_iter = None, lr, None, 0
    while n_iter < max_iter:  # optimize for a max of max_iter iterations
        n_iter += 1
        # compute gradient descent direction
        if n_iter == 1:
            d = -flat_grad
        else:
            history.update(flat_grad - prev_flat_grad, d * F32(t))  # do lbfgs update (update memory)
            d = history.direction(flat_grad)
        prev_flat_grad, prev_loss = flat_grad, loss
        # compute step length: reset initial guess for step size
        t = min(1.0, _rdiv(1.0, _cascade_sum(np.abs(flat_grad)))) * lr if n_iter == 1 else lr
        gtd = _dot(flat_grad, d)  # directional derivative: g * d
        if gtd > -tolerance_change:  # directional derivative is below tolerance
            break
        search = line_search_fn is not None
        x, loss, flat_grad, t, evals = _move(
            closure, x, t, d, loss, flat_grad, gtd, search, max_eval - current_evals, n_iter != max_iter
        )
        opt_cond = (search or n_iter != max_iter) and np.abs(flat_grad).max() <= tolerance_grad
        current_evals += evals  # update func eval
        # check conditions
        if n_iter == max_iter or current_evals >= max_eval or opt_cond:
            break
        # lack of progress
        if np.abs(d * F32(t)).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
            break
    return LBFGSResult(x, n_iter, current_evals, loss)
