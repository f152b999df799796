"""The parity ladder: PyTorch FP32 -> ONNX FP32 -> ONNX INT8, all on real validation images.

Every rung is compared with the rung before it and with PyTorch FP32, on probabilities (max_abs, worst-row
cosine) and on labels (top-1 agreement); labels come from each graph's own `label` output, so a broken ArgMax
is caught too. ONNX graphs run in ONNX Runtime (CPU, default optimizations: what a device runs).
`--debug-parity` (finding the first node that diverges) lives in `debug_parity`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgetl.config import PARITY_IMAGES
from edgetl.contract import FEATURES, FMAP, LABEL, LOGITS, PROBS, UINT8_NHWC
from edgetl.data import load_dataset
from edgetl.data.items import split_fingerprint
from edgetl.errors import UserError
from edgetl.images import BadImage
from edgetl.preprocess import Preprocess
from edgetl.verdict import MIN_AGREEMENT

MAX_IMAGES = PARITY_IMAGES
BATCH = 32
FP32_MAX_ABS = 1e-4
FP32_FEATURES_REL = 1e-4  # max |error| / max |value| of the head's input: measured ~1e-6 (float rounding)
# The INT8 graph must reproduce its own backbone (backbone.int8.onnx + head, same runtime): only the export
# stands between them, so labels must match (measured 1.0 on digits, 5 runs); 0.99 leaves room for one tie.
INT8_EXPORT_MIN_AGREEMENT = 0.99
# INT8 quality (drop, agreement of the deployable models) is judged once, by edgetl.verdict, at train time
# and again by export on the numbers train recorded (export.model.load_run). The ladder's INT8 rung only checks that
# the graph reproduces the run's own INT8 backbone + head; its agreement with onnx-fp32 (the FP32 backbone under
# the INT8-trained head) is reported, not judged. Without the run's INT8 backbone to compare with, it is judged
# on that agreement with the verdict's floor.
INT8_MIN_AGREEMENT = MIN_AGREEMENT
SCOPE = "backbone"  # attribute name of the backbone in export.FeatureMap: node scopes start with it


class ParityFailed(UserError):
    """A ladder stage is out of tolerance: the model is written, but the export exits 1."""

    exit_code = 1


def val_frames(record: dict, limit: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to `limit` decoded validation frames of the run's own split, spread over all classes."""
    cfg = record["config"]
    try:
        ds = load_dataset(cfg["data"], int(cfg.get("seed", 0)), False, lambda message: None)
    except UserError as e:
        raise UserError(f"the run's training data is needed for the parity check: {e}") from None
    if not ds.val:
        raise UserError(f"{cfg['data']}: no validation images to check the export on")
    expected = record.get("data", {}).get("val_sha256")
    if expected and split_fingerprint(ds.val) != expected:
        raise UserError(
            f"{cfg['data']}: the validation images differ from the ones this run was trained with (files added, "
            "removed or changed); restore the data folder, or re-run edgetl train before exporting"
        )
    picks = np.unique(np.linspace(0, len(ds.val) - 1, min(limit, len(ds.val))).round().astype(int))
    frames, labels = [], []
    min_size = Preprocess.from_dict(record["preprocess"]).decode_min_size
    for i in picks:
        try:
            frames.append(ds.val[i].load(min_size))
        except (BadImage, OSError):
            continue
        labels.append(ds.val[i].label)
    return frames, np.asarray(labels, np.int64)


Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # probs [N, K], labels [N], pooled features [N, D]


def _outputs(features: torch.Tensor, head: nn.Module) -> Outputs:
    logits = head(features)
    return torch.softmax(logits, 1).numpy(), logits.argmax(1).numpy(), features.numpy()


class Reference:
    """PyTorch FP32 with the training-time preprocessing: the numbers every ONNX graph must reproduce."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pre: Preprocess) -> None:
        self.backbone, self.head, self.pre = backbone, head, pre
        self._last: tuple[list, torch.Tensor] | None = None  # (frames, their features): the last run's

    def run(self, frames: list[np.ndarray]) -> Outputs:
        """(probs, labels, features) through `forward_features` (the pooled path training used)."""
        with torch.inference_mode():
            if self._last is None or self._last[0] is not frames:
                feats = [
                    self.backbone.forward_features(torch.from_numpy(self.pre(frames[i : i + BATCH])))
                    for i in range(0, len(frames), BATCH)
                ]
                self._last = (frames, torch.cat(feats))
            return _outputs(self._last[1], self.head)

    def with_head(self, head: nn.Module) -> Reference:
        """The same backbone under another head (an INT8 run's FP32 head): the features of the frames it has run
        already (the same list) are reused, not computed again."""
        other = Reference(self.backbone, head, self.pre)
        other._last = self._last
        return other

    def tensors(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every module output under `backbone.*` plus the boundary tensors, for one preprocessed batch."""
        found: dict[str, np.ndarray] = {}
        handles = []
        for name, module in self.backbone.named_modules():
            key = f"{SCOPE}.{name}" if name else SCOPE

            def hook(_m, _inp, out, key=key) -> None:
                if isinstance(out, torch.Tensor):
                    found[key] = out.detach().numpy().copy()

            handles.append(module.register_forward_hook(hook))
        try:
            with torch.inference_mode():
                fmap = self.backbone.forward_feature_map(torch.from_numpy(x))
        finally:
            for h in handles:
                h.remove()
        with torch.inference_mode():
            features = self.backbone.forward_features(torch.from_numpy(x))
            logits = self.head(features)
        boundaries = {
            "input": x,
            FMAP: fmap,
            FEATURES: features,
            LOGITS: logits,
            PROBS: torch.softmax(logits, 1),
        }
        return {**found, **{k: np.asarray(v) for k, v in boundaries.items()}}


def session(model: onnx.ModelProto, extra_outputs: tuple[str, ...] = ()):
    """ONNX Runtime CPU session; `extra_outputs` are inner tensors made graph outputs (e.g. `logits`)."""
    from edgetl.deploy.ort_session import session as ort_session

    if extra_outputs:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra_outputs)
        model = copy
    return ort_session(model.SerializeToString())


def feed(group: list[np.ndarray], pre: Preprocess, input_format: str) -> dict[str, np.ndarray]:
    if input_format == UINT8_NHWC:
        return {"image": np.stack(group)}
    return {"input": pre(np.stack(group))}


def onnx_run(model: onnx.ModelProto, frames: list[np.ndarray], pre: Preprocess, input_format: str) -> Outputs:
    """(probs, labels, features) from the graph; frames of one size are batched together, in input order.

    The head's input is compared too: a confident head saturates its probabilities, which then hide errors
    upstream. It is the pooled `features`, or the feature map a fused PoolHead pools (averaged here)."""
    head_input = head_input_name(model)
    sess = session(model, (head_input,))
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        by_shape[f.shape].append(i)
    out: Outputs | None = None
    for idx in by_shape.values():
        for start in range(0, len(idx), BATCH):
            part = idx[start : start + BATCH]
            got = sess.run([PROBS, LABEL, head_input], feed([frames[i] for i in part], pre, input_format))
            if got[2].ndim == 4:
                got[2] = got[2].mean(axis=(2, 3))
            if out is None:
                out = tuple(np.zeros((len(frames), *g.shape[1:]), g.dtype) for g in got)
            for whole, g in zip(out, got, strict=True):
                whole[part] = g
    return out


def compare(a: Outputs, b: Outputs) -> dict:
    """Probabilities: max_abs, mean and worst-row cosine; labels: the fraction that agree.

    The worst row is one image: a single image whose label flips between two confident classes has a cosine
    near 0 even when 99% of labels agree, so `cosine` (the mean) is what describes the whole set."""
    pa, pb = a[0].astype(np.float64), b[0].astype(np.float64)
    norms = np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1)
    cosine = (pa * pb).sum(1) / np.maximum(norms, 1e-30)
    return {
        "max_abs": float(np.abs(pa - pb).max()),
        "cosine": float(cosine.mean()),
        "worst_cosine": float(cosine.min()),
        "features_rel": float(np.abs(a[2] - b[2]).max() / max(float(np.abs(b[2]).max()), 1e-12)),
        "top1_agreement": float((a[1] == b[1]).mean()),
    }


def head_input_name(model: onnx.ModelProto) -> str:
    fused = [n for n in model.graph.node if n.op_type == "PoolHead"]
    return fused[0].input[0] if fused else FEATURES


def int8_reference(ref: Reference, backbone: onnx.ModelProto, frames) -> Outputs:
    """The run's INT8 backbone (`input` -> `features`) in ONNX Runtime, NumPy preprocessing and the PyTorch
    head: what training measured, with nothing of the export in between."""
    sess = session(backbone)
    feats = [
        torch.from_numpy(sess.run(None, {"input": ref.pre(frames[i : i + BATCH])})[0])
        for i in range(0, len(frames), BATCH)
    ]
    with torch.inference_mode():
        return _outputs(torch.cat(feats), ref.head)


def ladder(
    ref, frames, labels, input_format, fp32, int8, int8_backbone=None, onnx_runner=None, int8_runner=None
) -> list[dict]:
    """The stages as export.json records them; each says whether it passed its precision's tolerance.

    `frames` are whatever `ref.run` and the runners take: images here, sentences for text runs
    (edgetl.export.text passes its own runners)."""
    onnx_runner, int8_runner = onnx_runner or onnx_run, int8_runner or int8_reference
    results = {"pytorch-fp32": ref.run(frames), "onnx-fp32": onnx_runner(fp32, frames, ref.pre, input_format)}
    if int8 is not None:
        results["onnx-int8"] = onnx_runner(int8, frames, ref.pre, input_format)
    own = int8_runner(ref, int8_backbone, frames) if int8 is not None and int8_backbone is not None else None
    names = list(results)
    stages = []
    for i, name in enumerate(names):
        prev = names[max(i - 1, 0)]
        stage = {
            "name": name,
            "runtime": "torch" if i == 0 else "onnxruntime",
            "vs": prev,
            **compare(results[name], results[prev]),
            "vs_pytorch": compare(results[name], results["pytorch-fp32"]),
            "accuracy": float((results[name][1] == labels).mean()),
        }
        if name == "onnx-int8" and own is not None:
            stage["vs_int8_backbone"] = compare(results[name], own)
        stage["passed"], stage["check"] = _judge(stage)
        stages.append(stage)
    return stages


def _judge(stage: dict) -> tuple[bool, str]:
    """(passed, one line naming the tolerance and where to look when it is missed)."""
    name = stage["name"]
    if name == "pytorch-fp32":
        return True, "reference"
    if name == "onnx-fp32":
        vs = stage["vs_pytorch"]
        ok = vs["max_abs"] <= FP32_MAX_ABS and vs["features_rel"] <= FP32_FEATURES_REL and vs["top1_agreement"] == 1.0
        return ok, (
            f"max_abs {vs['max_abs']:.2e} (<= {FP32_MAX_ABS:g}), features rel {vs['features_rel']:.2e} "
            f"(<= {FP32_FEATURES_REL:g}) and agreement {vs['top1_agreement']:.4f} (== 1) vs pytorch-fp32; when off, "
            "look at preprocessing (try --input float-nchw) and the backbone export"
        )
    own = stage.get("vs_int8_backbone")
    if own is not None and own["top1_agreement"] < INT8_EXPORT_MIN_AGREEMENT:
        return False, (
            f"agreement {own['top1_agreement']:.4f} with the run's own INT8 backbone + head "
            f"(>= {INT8_EXPORT_MIN_AGREEMENT}); the export changed the INT8 model: look at preprocessing and the head"
        )
    agree = stage["top1_agreement"]
    if own is not None:
        return True, (
            f"agreement {own['top1_agreement']:.4f} with its own INT8 backbone + head (>= {INT8_EXPORT_MIN_AGREEMENT}); "
            f"{agree:.4f} with onnx-fp32 (reported: INT8 quality was judged at train time, see run.json)"
        )
    return agree >= INT8_MIN_AGREEMENT, (
        f"agreement {agree:.4f} with onnx-fp32 (>= {INT8_MIN_AGREEMENT}); when off, look at the quantization "
        "(--quant-ignore / --quant-auto-fallback at train time)"
    )


def stage_lines(stages: list[dict], images: int) -> list[str]:
    lines = [f"parity on {images} validation images:"]
    for s in stages:
        vs = s["vs_pytorch"]
        lines.append(
            f"  {s['name']:<13} max_abs {vs['max_abs']:.2e}  mean cosine {vs['cosine']:.6f}  "
            f"agreement {vs['top1_agreement']:.4f} (vs pytorch-fp32)  accuracy {s['accuracy']:.4f}  "
            f"{'ok' if s['passed'] else 'FAILED'}"
        )
        own = s.get("vs_int8_backbone")
        if own is not None:
            lines.append(
                f"  {'':<13} vs its own INT8 backbone + head (what training measured): agreement "
                f"{own['top1_agreement']:.4f}, max_abs {own['max_abs']:.2e}"
            )
    return lines


def raise_on_failure(stages: list[dict], run_dir, debugged: bool) -> None:
    failed = [s for s in stages if not s["passed"]]
    if failed:
        hint = "" if debugged else f"; run `edgetl export {run_dir} --debug-parity` to find the first diverging node"
        raise ParityFailed(f"parity stage {failed[0]['name']} failed: {failed[0]['check']}{hint}")


def export_report(out: Path, data: bytes, shipped: onnx.ModelProto, int8: bool, stages: list[dict], **fields) -> dict:
    """export.json: the written graph (file, sha256, opset, precision, node count), `fields` of the exporter,
    the parity stages and the verdict."""
    return {
        "model": out.name,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "opset": next(o.version for o in shipped.opset_import if o.domain in ("", "ai.onnx")),
        "precision": "int8" if int8 else "fp32",
        "nodes": len(shipped.graph.node),
        **fields,
        "stages": stages,
        "passed": all(s["passed"] for s in stages),
    }
