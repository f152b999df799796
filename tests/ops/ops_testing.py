"""Cases, poisoning and checks shared by the fused-op tests: every implementation against `edgetl.ops.reference`.

Outputs are poisoned before each run (NaN, or a sentinel label), so an element a kernel forgets to write fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.ops import reference
from edgetl.preprocess import Preprocess

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
LABEL_SENTINEL = -7777


def spec(op: str) -> dict:
    return json.loads((KERNELS / op / "spec.json").read_text())


@dataclass(frozen=True)
class PreprocessCase:
    batch: int
    h_in: int
    w_in: int
    size: tuple[int, int]
    channel_order: str = "RGB"

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, Preprocess]:
        frames = rng.integers(0, 256, (self.batch, self.h_in, self.w_in, 3), dtype=np.uint8)
        mean = tuple(float(v) for v in rng.uniform(0.3, 0.6, 3))
        std = tuple(float(v) for v in rng.uniform(0.2, 0.6, 3))
        return frames, Preprocess(size=self.size, mean=mean, std=std, channel_order=self.channel_order)


# Odd sizes, non-square frames, down- and up-scaling (per axis), RGB and BGR, batch 1 and 7.
PREPROCESS_CASES = [
    PreprocessCase(1, 37, 53, (24, 31)),
    PreprocessCase(7, 61, 29, (32, 48), "BGR"),
    PreprocessCase(7, 9, 11, (17, 13)),
    PreprocessCase(1, 120, 97, (8, 45), "BGR"),
]


@dataclass(frozen=True)
class PoolHeadCase:
    batch: int
    c: int
    h: int
    w: int
    k: int

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.standard_normal((self.batch, self.c, self.h, self.w)).astype(np.float32)
        weight = (rng.standard_normal((self.k, self.c)) / np.sqrt(self.c)).astype(np.float32)
        bias = rng.standard_normal(self.k).astype(np.float32)
        return x, weight, bias


POOL_HEAD_CASES = [
    PoolHeadCase(1, 40, 5, 3, 10),
    PoolHeadCase(7, 33, 7, 7, 5),
    PoolHeadCase(7, 1280, 2, 2, 1000),  # EfficientNet-Lite0 width at 64x64, an ImageNet-sized head
    PoolHeadCase(1, 17, 1, 1, 3),
]


def poisoned(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.full(shape, np.nan if dtype == np.float32 else LABEL_SENTINEL, dtype)


def assert_preprocess_matches(out: np.ndarray, frames: np.ndarray, pre: Preprocess, kind: str) -> None:
    """kind: "fused" or "decomposed" (the spec's tolerance classes)."""
    ref = reference.preprocess(frames, pre)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.isfinite(out).all(), "some outputs were never written"
    scale, _ = pre.scale_bias()
    atol = spec("preprocess")["tolerances"][kind]["atol_pixels"] * float(np.abs(scale).max())
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


def assert_pool_head_matches(
    probs: np.ndarray, label: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> None:
    ref_probs, ref_label = reference.pool_head(x, weight, bias)
    assert probs.shape == ref_probs.shape and probs.dtype == np.float32
    assert label.shape == ref_label.shape and label.dtype == np.int64
    assert np.isfinite(probs).all(), "some probabilities were never written"
    tol = spec("pool_head")["tolerances"]
    np.testing.assert_allclose(probs, ref_probs, rtol=tol["probs"]["rtol"], atol=tol["probs"]["atol"])
    logits = np.sort(x.mean(axis=(2, 3)) @ weight.T + bias, axis=1)
    clear = (
        (logits[:, -1] - logits[:, -2]) > tol["label"]["exact_when_logit_gap_above"] if logits.shape[1] > 1 else True
    )
    np.testing.assert_array_equal(np.where(clear, label, ref_label), ref_label)


def run_onnxruntime(model, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run with ONNX Runtime writing straight into the given (poisoned) output arrays."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name, array in outputs.items():
        binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
    session.run_with_iobinding(binding)
    return outputs


def run_openvino(compiled, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a compiled OpenVINO model writing into the given (poisoned) output arrays (shared memory)."""
    import openvino as ov

    request = compiled.create_infer_request()
    for name, array in outputs.items():
        request.set_tensor(compiled.output(name), ov.Tensor(array, shared_memory=True))
    request.infer(feeds)
    return outputs


def compile_openvino(core, ov_model):
    """f32 precision: on AMX CPUs OpenVINO defaults to bf16, which would blur the decomposition's comparison."""
    return core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
