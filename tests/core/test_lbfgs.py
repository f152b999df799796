"""The NumPy L-BFGS (edgetl.train.lbfgs) that fits the linear head without torch: the optimum scikit-learn's
LogisticRegression finds, the iterates torch.optim.LBFGS produced (it replaces it), and a warm fit that never
imports torch. Data: scikit-learn's digits pixels (real images, 64 features), fast enough for every run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetl.errors import UserError
from edgetl.models import heads
from edgetl.train import fit, lbfgs

OPTS = dict(
    lr=1.0,
    max_iter=fit.LBFGS_MAX_ITER,
    history_size=fit.LBFGS_HISTORY,
    tolerance_grad=fit.LBFGS_TOL,
    tolerance_change=1e-9,
    line_search_fn="strong_wolfe",
)


def Cfg():  # noqa: N802 - what fit_head reads of a run's config: the defaults (linear head, auto solver, seed 0)
    from edgetl.config import TrainCfg

    return TrainCfg(progress=False)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    train, val = order[:1400], order[1400:]
    return x[train], y[train], x[val], y[val]


def _closure(x: np.ndarray, y: np.ndarray, k: int):
    """The head's loss as fit._fit_lbfgs builds it, on one flat vector (W then b)."""
    d = x.shape[1]
    loss_fn = fit.SoftmaxLoss(y, k, fit.class_weights(y, k, True), 1.0 / len(y), 2)

    def closure(flat: np.ndarray):
        grad = np.empty_like(flat)
        loss = loss_fn(x, flat[: k * d].reshape(k, d), flat[k * d :], grad[: k * d].reshape(k, d), grad[k * d :])
        return loss, grad

    return loss_fn, closure


def _mkl_avx512() -> bool:
    torch = pytest.importorskip("torch")
    return torch.backends.mkl.is_available() and torch.backends.cpu.get_cpu_capability() == "AVX512"


def test_the_head_reaches_scikit_learns_optimum(digits):
    """Same objective as LogisticRegression(C=1, class_weight='balanced'): same val predictions, and our
    objective at its solution is no lower than at ours."""
    from sklearn.linear_model import LogisticRegression

    xt, yt, xv, yv = digits
    res = fit.fit_head(fit.cached_source(xt, xv), yt, yv, xt.shape[1], 10, Cfg(), progress=False)
    assert isinstance(res.head, heads.LinearHead) and res.solver == "lbfgs" and res.epochs_run > 10
    ref = LogisticRegression(C=fit.LBFGS_C, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(xt, yt)
    np.testing.assert_array_equal(res.head.predict(xv), ref.predict(xv))
    assert res.val_acc == pytest.approx(ref.score(xv, yv), abs=1e-6) and res.val_acc > 0.95
    np.testing.assert_allclose(res.head.weight, ref.coef_, atol=1e-2)  # blank pixels: flat directions
    loss_fn, closure = _closure(xt, yt, 10)
    try:
        with fit.one_blas_thread():
            ours = closure(np.concatenate([res.head.weight.ravel(), res.head.bias]))[0]
            theirs = closure(np.concatenate([ref.coef_.ravel(), ref.intercept_]).astype(np.float32))[0]
    finally:
        loss_fn.pool.shutdown()
    assert ours == pytest.approx(res.history[-1]["loss"]) and ours <= theirs + 1e-6


def test_the_port_follows_torch_lbfgs(digits):
    """The optimizer it replaces, same closure and options: the same iterations and head (bit for bit where
    torch's dot product is MKL's AVX-512 sdot, whose summation order edgetl.train.lbfgs reproduces)."""
    torch = pytest.importorskip("torch")
    xt, yt, _, _ = digits
    n = 10 * xt.shape[1] + 10
    fn_a, ours = _closure(xt, yt, 10)
    fn_b, theirs = _closure(xt, yt, 10)
    w = torch.zeros(n)
    w.grad = torch.zeros(n)
    opt = torch.optim.LBFGS([w], **OPTS)

    def torch_closure():
        loss, grad = theirs(w.detach().numpy().copy())
        w.grad.copy_(torch.from_numpy(grad))
        return torch.tensor(loss, dtype=torch.float64)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with fit.one_blas_thread():
            got = lbfgs.minimize(ours, np.zeros(n, np.float32), **OPTS)
            with torch.no_grad():
                opt.step(torch_closure)
    finally:
        torch.set_num_threads(before)
        fn_a.pool.shutdown()
        fn_b.pool.shutdown()
    assert got.n_iter == opt.state[w]["n_iter"] and got.func_evals == opt.state[w]["func_evals"]
    if _mkl_avx512():
        np.testing.assert_array_equal(got.x, w.numpy())
    else:
        np.testing.assert_allclose(got.x, w.numpy(), atol=1e-4)


@pytest.mark.parametrize("n", [1, 5, 7, 12, 16, 26, 255, 1000, 12810])
def test_vector_ops_round_as_torchs(n: int):
    """Each float32 operation of the port against the torch operation it stands for."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(n)
    x, y = (rng.standard_normal((2, n)) * rng.uniform(0.01, 10, (2, 1))).astype(np.float32)
    tx, ty = torch.from_numpy(x).clone(), torch.from_numpy(y).clone()  # torch's own (aligned) memory, as in LBFGS
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for a in (np.float32(0.3), -1.7e-3, 1.0):
            want = ty.clone().add_(tx, alpha=torch.tensor(a) if isinstance(a, np.float32) else a).numpy()
            np.testing.assert_array_equal(lbfgs._axpy(a, x, y), want)
        assert lbfgs._rdiv(3.0, np.float32(x[0])) == np.float32((3.0 / torch.tensor(x[0])).item())
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):  # x86: torch sums in 8 lanes
            assert lbfgs._cascade_sum(np.abs(x)) == np.float32(tx.abs().sum().item())
        if _mkl_avx512():
            assert lbfgs._dot(x, y) == np.float32(tx.dot(ty).item())
    finally:
        torch.set_num_threads(before)
    assert abs(float(lbfgs._dot(x, y)) - float(np.dot(x.astype(np.float64), y))) <= 1e-5 * float(np.abs(x * y).sum())


def test_axpy_rounds_once_where_float64_would_round_twice():
    """a * x + y exactly 2^-70 above a float32 midpoint: float64 drops the 2^-70 and a second rounding to float32
    goes to even (1.0); one rounding, as torch's fused add_, goes up."""
    a = np.float32(1 + 2896 * 2.0**-23)
    x = np.full(3, 2.0**-24 * (1 - 2895 * 2.0**-23), np.float32)
    y = np.array([1.0, -1.0, 3.0], np.float32)
    assert (x.astype(np.float64) * float(a) + y).astype(np.float32)[0] == 1.0
    np.testing.assert_array_equal(lbfgs._axpy(a, x, y), np.array([1 + 2.0**-23, -1 + 2.0**-24, 3.0], np.float32))


def test_a_numpy_head_saves_the_file_an_nn_linear_did(tmp_path: Path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    head = heads.LinearHead(rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32))
    module = torch.nn.Linear(4, 3)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(head.weight))
        module.bias.copy_(torch.from_numpy(head.bias))
    meta = heads.head_meta("linear", 4, 3)
    ours, theirs = heads.head_bytes(head, meta), heads.head_bytes(module, meta)

    def parts(blob: bytes) -> tuple[dict, bytes]:
        size = int.from_bytes(blob[:8], "little")  # the header's key order is safetensors' own (random) choice
        return json.loads(blob[8 : 8 + size]), blob[8 + size :]

    assert parts(ours) == parts(theirs) and len(ours) == len(theirs)
    heads.save_head(head, meta, tmp_path / "head.safetensors")
    loaded, got_meta = heads.load_head(tmp_path / "head.safetensors")
    assert isinstance(loaded, torch.nn.Linear) and got_meta == meta
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(heads.head_logits(loaded, x), head(x), rtol=1e-5, atol=1e-6)
    head.bias[1] = np.nan
    with pytest.raises(UserError, match="weight 'bias' holds NaN"):
        heads.head_bytes(head, meta)


NO_TORCH = """
import sys
import numpy as np
{imports}
from edgetl.models.heads import head_bytes, head_meta
from edgetl.train.fit import cached_source, fit_head

from edgetl.config import TrainCfg as Cfg

rng = np.random.default_rng(0)
y = rng.integers(0, 4, 300)
x = (rng.standard_normal((300, 32)) + y[:, None]).astype(np.float32)
res = fit_head(cached_source(x[:200], x[200:]), y[:200], y[200:], 32, 4, Cfg(), progress=False)
assert res.solver == "lbfgs" and res.val_acc > 0.9, res.val_acc
head_bytes(res.head, head_meta("linear", 32, 4))
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def _modules_after(imports: str) -> list[str]:
    code = NO_TORCH.format(imports=imports)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1].replace("'", '"'))


def test_a_cached_linear_fit_never_imports_torch():
    assert _modules_after("import edgetl.train.lbfgs") == []


def test_importing_the_train_flow_and_fitting_never_imports_torch():
    assert _modules_after("import edgetl.train.run") == []


@pytest.mark.parametrize("solver", ["lbfgs", "adamw"])
def test_the_backbone_in_the_loop_still_trains(image_folder: Path, tmp_path: Path, solver: str):
    """`--no-cache-features`: the features come from the backbone at every evaluation (NumPy arrays too). The
    random tiny backbone's features are small: L-BFGS stops early there (as torch's did), above chance still."""
    from edgetl.train.run import run_train
    from tests.core.conftest import tiny_cfg

    record = run_train(tiny_cfg(image_folder, tmp_path / "r", cache_features=False, solver=solver, epochs=1))
    assert record["head"]["solver"] == solver and record["metrics"]["val_acc"] > 0.5, record["metrics"]
    assert record["metrics"]["fit"]["iterations"] >= 1
