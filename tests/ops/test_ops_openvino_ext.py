"""edgetl's OpenVINO extension: the fused CPU kernels, reached through the ONNX frontend mapping.

`make test` builds the extension first (`make kernels`), so a missing library is a failure here, not a skip.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from edgetl.ops import native, onnx_functions, ov_reader
from tests.ops.ops_testing import (
    POOL_HEAD_CASES,
    PREPROCESS_CASES,
    assert_pool_head_matches,
    assert_preprocess_matches,
    compile_openvino,
    poisoned,
    run_openvino,
)


@pytest.fixture
def core() -> ov.Core:
    if native.openvino_extension_path() is None:
        pytest.fail(f"the OpenVINO extension is not built in {native.LIB_DIR}; run `make kernels`")
    return ov.Core()


def _fused(core: ov.Core, model, op: str):
    ov_model = ov_reader.read_model(core, model)
    assert ov_reader.fused_ops(ov_model) == [op], "the ONNX node was not mapped onto the fused op"
    return compile_openvino(core, ov_model)


def test_preprocess_fused_any_frame_size(core, rng):
    """One compiled model (dynamic N, H, W), every case: odd, non-square, up/down-scaled, batch 1 and 7."""
    for case in PREPROCESS_CASES:
        first, pre = case.draw(rng)
        compiled = _fused(core, onnx_functions.preprocess_model(pre), "Preprocess")
        other_size = case.draw(rng)[0][:1, : case.h_in // 2 + 1]  # same compiled model, another frame size
        for frames in (first, other_size):
            out = run_openvino(
                compiled, {"frames": frames}, {"x": poisoned((frames.shape[0], 3, *pre.size), np.float32)}
            )
            assert_preprocess_matches(out["x"], frames, pre, "fused")


@pytest.mark.parametrize("case", POOL_HEAD_CASES, ids=str)
def test_pool_head_fused(core, case, rng):
    x, weight, bias = case.draw(rng)
    compiled = _fused(core, onnx_functions.pool_head_model(weight, bias), "PoolHead")
    outputs = {"probs": poisoned((x.shape[0], weight.shape[0]), np.float32), "label": poisoned((x.shape[0],), np.int64)}
    out = run_openvino(compiled, {"features": x}, outputs)
    assert_pool_head_matches(out["probs"], out["label"], x, weight, bias)


def test_fused_ops_survive_openvino_ir(core, rng, tmp_path):
    """A compiled artifact may be OpenVINO IR: the ops serialize and read back through the extension."""
    frames, pre = PREPROCESS_CASES[1].draw(rng)
    ov.save_model(ov_reader.read_model(core, onnx_functions.preprocess_model(pre)), tmp_path / "pre.xml")
    reloaded = ov.Core()
    native.load_openvino_extension(reloaded)
    ov_model = reloaded.read_model(tmp_path / "pre.xml")
    assert ov_reader.fused_ops(ov_model) == ["Preprocess"]
    out = run_openvino(
        compile_openvino(reloaded, ov_model), {"frames": frames}, {"x": poisoned((7, 3, *pre.size), np.float32)}
    )
    # IR keeps float attributes (scale, bias) as decimal text with ~7 significant digits, so the reloaded op's
    # constants differ from the spec's in the last float bit: the decomposed tolerance class applies here.
    assert_preprocess_matches(out["x"], frames, pre, "decomposed")
