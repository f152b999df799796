"""CUDA kernels of the fused ops against the NumPy reference, through the plain C ABI (kernels/cuda/edgetl_cuda.h).

    python kernels/cuda_harness.py      # after `make kernels`; exit 0 = all passed or skipped, 1 = a mismatch

Device memory comes from the CUDA runtime over ctypes (no torch, no CuPy). Outputs are poisoned (all bytes 0xFF:
NaN floats, label -1) before every launch, so an unwritten element fails. Cases cover odd sizes, non-square
frames, up- and down-scaling, BGR, batch 1 and 7, and a 1080p frame. Without a GPU it says why and skips.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import sys
from pathlib import Path

import numpy as np

from edgetl.ops import native, reference
from edgetl.preprocess import Preprocess

KERNELS = Path(__file__).resolve().parent
PREPROCESS_CASES = [  # (batch, h_in, w_in, (h, w), channel_order)
    (1, 37, 53, (24, 31), "RGB"),
    (7, 61, 29, (32, 48), "BGR"),
    (7, 9, 11, (17, 13), "RGB"),
    (1, 1, 5, (8, 9), "RGB"),
    (1, 1080, 1920, (224, 224), "RGB"),
]
POOL_HEAD_CASES = [  # (batch, c, h, w, k)
    (1, 40, 5, 3, 10),
    (7, 33, 7, 7, 5),
    (7, 1280, 2, 2, 1000),
    (1, 17, 1, 1, 3),
    (7, 1280, 7, 7, 10),
]


class CudaRuntime:
    """The few cudart calls the harness needs."""

    H2D, D2H = 1, 2

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        self._live: list[ctypes.c_void_p] = []

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        return count.value if self.lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0

    def check(self, status: int, what: str) -> None:
        if status != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"{what}: CUDA error {status} ({self.lib.cudaGetErrorString(status).decode()})")

    def upload(self, array: np.ndarray) -> ctypes.c_void_p:
        ptr = self.alloc(array.nbytes)
        self.check(
            self.lib.cudaMemcpy(ptr, array.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(array.nbytes), self.H2D),
            "cudaMemcpy H2D",
        )
        return ptr

    def alloc(self, nbytes: int, poison: bool = False) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        self._live.append(ptr)
        if poison:
            self.check(self.lib.cudaMemset(ptr, 0xFF, ctypes.c_size_t(nbytes)), "cudaMemset")
        return ptr

    def download(self, ptr: ctypes.c_void_p, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        out = np.empty(shape, dtype)
        self.check(self.lib.cudaDeviceSynchronize(), "kernel")
        self.check(
            self.lib.cudaMemcpy(out.ctypes.data_as(ctypes.c_void_p), ptr, ctypes.c_size_t(out.nbytes), self.D2H),
            "cudaMemcpy D2H",
        )
        return out

    def free_all(self) -> None:
        for ptr in self._live:
            self.lib.cudaFree(ptr)
        self._live.clear()


def _find_cudart() -> str | None:
    candidates = [ctypes.util.find_library("cudart")]
    candidates += glob.glob(str(Path(sys.prefix) / "lib/python3*/site-packages/nvidia/cu*/lib/libcudart.so*"))
    candidates += glob.glob("/usr/local/cuda/lib64/libcudart.so*")
    return next((c for c in candidates if c), None)


def open_cuda() -> tuple[ctypes.CDLL, CudaRuntime] | str:
    """(kernels, runtime), or the reason the CUDA checks cannot run here."""
    lib_path = native.cuda_library_path()
    if lib_path is None:
        return f"libedgetl_cuda is not built in {native.LIB_DIR} (run `make kernels` on a machine with nvcc)"
    cudart = _find_cudart()
    if cudart is None:
        return "no CUDA runtime library (libcudart) found"
    try:
        runtime = CudaRuntime(cudart)
    except OSError as e:
        return f"cannot load {cudart}: {e}"
    if runtime.device_count() == 0:
        return "no CUDA GPU visible (cudaGetDeviceCount returned 0 or failed)"
    kernels = ctypes.CDLL(str(lib_path))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    kernels.edgetl_preprocess_cuda.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr]
    kernels.edgetl_pool_head_cuda.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, ptr]
    return kernels, runtime


def _spec(op: str) -> dict:
    return json.loads((KERNELS / op / "spec.json").read_text())["tolerances"]


def check_preprocess(kernels: ctypes.CDLL, cuda: CudaRuntime, rng: np.random.Generator, case: tuple) -> str | None:
    """None when the kernel matches the reference, else what differs."""
    batch, h_in, w_in, size, order = case
    frames = rng.integers(0, 256, (batch, h_in, w_in, 3), dtype=np.uint8)
    pre = Preprocess(
        size=size, mean=tuple(rng.uniform(0.3, 0.6, 3)), std=tuple(rng.uniform(0.2, 0.6, 3)), channel_order=order
    )
    scale, bias = pre.scale_bias()
    channels = np.array([2, 1, 0] if order == "BGR" else [0, 1, 2], np.int32)
    out_shape = (batch, 3, *size)
    d_out = cuda.alloc(int(np.prod(out_shape)) * 4, poison=True)
    status = kernels.edgetl_preprocess_cuda(
        cuda.upload(frames), d_out, batch, h_in, w_in, size[0], size[1],
        scale.ctypes.data_as(ctypes.c_void_p), bias.ctypes.data_as(ctypes.c_void_p),
        channels.ctypes.data_as(ctypes.c_void_p), None,
    )  # fmt: skip
    cuda.check(status, "edgetl_preprocess_cuda")
    out = cuda.download(d_out, out_shape, np.float32)
    atol = _spec("preprocess")["fused"]["atol_pixels"] * float(np.abs(scale).max())
    ref = reference.preprocess(frames, pre)
    if not np.isfinite(out).all():
        return f"{int((~np.isfinite(out)).sum())} outputs never written"
    err = float(np.abs(out - ref).max())
    return None if err <= atol else f"max abs error {err:.3g} > {atol:.3g}"


def check_pool_head(kernels: ctypes.CDLL, cuda: CudaRuntime, rng: np.random.Generator, case: tuple) -> str | None:
    batch, c, h, w, k = case
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    weight = (rng.standard_normal((k, c)) / np.sqrt(c)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    d_probs, d_label = cuda.alloc(batch * k * 4, poison=True), cuda.alloc(batch * 8, poison=True)
    status = kernels.edgetl_pool_head_cuda(
        cuda.upload(x), cuda.upload(weight), cuda.upload(bias), d_probs, d_label, batch, c, h * w, k, None
    )
    cuda.check(status, "edgetl_pool_head_cuda")
    probs, label = cuda.download(d_probs, (batch, k), np.float32), cuda.download(d_label, (batch,), np.int64)
    ref_probs, ref_label = reference.pool_head(x, weight, bias)
    tol = _spec("pool_head")
    if not np.isfinite(probs).all() or (label < 0).any():
        return "some outputs never written"
    if not np.allclose(probs, ref_probs, rtol=tol["probs"]["rtol"], atol=tol["probs"]["atol"]):
        return f"probs max abs error {float(np.abs(probs - ref_probs).max()):.3g}"
    logits = np.sort(x.mean(axis=(2, 3)) @ weight.T + bias, axis=1)
    clear = (
        logits[:, -1] - logits[:, -2] > tol["label"]["exact_when_logit_gap_above"] if k > 1 else np.ones(batch, bool)
    )
    wrong = clear & (label != ref_label)
    return f"labels differ at {np.flatnonzero(wrong).tolist()}" if wrong.any() else None


def run_all(kernels: ctypes.CDLL, cuda: CudaRuntime, seed: int | None = None) -> list[str]:
    """Every case once, on fresh random inputs; returns the failures ("op case: what")."""
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    failures = []
    suites = (("Preprocess", check_preprocess, PREPROCESS_CASES), ("PoolHead", check_pool_head, POOL_HEAD_CASES))
    for op, check, cases in suites:
        for case in cases:
            try:
                problem = check(kernels, cuda, rng, case)
            finally:
                cuda.free_all()
            print(f"{'FAIL' if problem else 'ok  '} {op} {case}{': ' + problem if problem else ''}")
            if problem:
                failures.append(f"{op} {case}: {problem}")
    return failures


def main() -> int:
    opened = open_cuda()
    if isinstance(opened, str):
        print(f"SKIP: CUDA checks not run: {opened}")
        return 0
    failures = run_all(*opened)
    print(f"{len(failures)} failure(s)" if failures else "all CUDA kernel checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
