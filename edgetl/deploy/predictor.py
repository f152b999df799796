"""The torch-free predictor used on the device by `edgetl predict` and `edgetl bench`.

Imports only NumPy, Pillow (through edgetl.images) and, when a bundle is loaded, that bundle's runtime.
It opens and verifies a bundle, loads the target's Runner and turns decoded frames into model inputs:
uint8 NHWC frames go in as they are (preprocessing is in the graph); float-NCHW models get the NumPy
`Preprocess` from the manifest, the same code training used. Static-shape builds (NPU, TensorRT) take one
fixed frame size, so other frames are resized to it first, with the same bilinear resize.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.contract import ALL_FORMATS, FLOAT_NCHW, LABEL, PROBS, TEXT
from edgetl.deploy.bundle import open_bundle
from edgetl.deploy.targets import get_target
from edgetl.deploy.targets.base import Runner
from edgetl.errors import RuntimeMissing, UserError
from edgetl.images import BadImage, Skipper, decode_image
from edgetl.machine import cpu_id, cpu_line, int8_dot
from edgetl.preprocess import resize_bilinear
from edgetl.texts import is_text_spec, read_preprocess, strings


@dataclass
class Prediction:
    path: str
    label: int
    class_name: str
    prob: float
    topk: list[tuple[str, float]] = field(default_factory=list)
    ms: float = 0.0  # frame -> result: input preparation + Runner.infer (file reading and decoding excluded)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            LABEL: self.label,
            "class": self.class_name,
            "prob": self.prob,
            "topk": [[name, p] for name, p in self.topk],
            "ms": self.ms,
        }


class Predictor:
    """An opened, verified bundle with its runner loaded. Use as a context manager (it owns a temp folder)."""

    def __init__(self, bundle: Path | str, device: str | None = None) -> None:
        self._stack = contextlib.ExitStack()
        try:
            artifact = self._stack.enter_context(open_bundle(Path(bundle)))
            target = get_target(artifact.target)
            problem = target.available()
            if problem:
                raise RuntimeMissing(f"{bundle}: built for {artifact.target}; {problem}")
            self.manifest = artifact.manifest
            self._root = artifact.root
            self._read_spec(bundle)  # before loading: a damaged manifest fails fast, without a runtime started
            self.runner: Runner
            self.precise = self._load(target, artifact, device)
            self.fidelity, self.precise = self._check_int8(target, artifact, device)
        except BaseException:
            self._stack.close()  # removes the unpacked temp folder, whatever failed
            raise

    @property
    def root(self) -> Path:
        """The opened bundle's folder (its files: the model, the tokenizer, the INT8 probe)."""
        return self._root

    def _load(self, target, artifact, device) -> bool:
        """Open the runner; an ONNX Runtime INT8 image bundle on a CPU whose u8s8 kernels saturate (no VNNI) opens in
        the non-saturating u8u8 mode at once: there the default kernels pass the 8-image probe yet cost accuracy (the
        demo's bundle on an AVX2-only EPYC: 0.9387 on the 359 val PNGs, 0.9582 in u8u8, at equal speed). Not a text
        bundle (dynamic quantization): there u8u8 kept every label and took ~1.2x the time. True where it did; a
        model that mode cannot load keeps the default kernels (the probe still decides, in _check_int8)."""
        int8_image = target.name == "onnxruntime" and self.manifest.get("probe") and not self.is_text
        if int8_image and int8_dot() == "saturating":  # read the CPU only where it matters (every predict opens)
            try:
                self.runner = self._stack.enter_context(target.load(artifact, device, precise=True))
                return True
            except UserError:
                pass
        self.runner = self._stack.enter_context(target.load(artifact, device))
        return False

    def _check_int8(self, target, artifact, device) -> tuple[dict | None, bool]:
        """Run the bundle's INT8 probe (edgetl.deploy.fidelity); where ONNX Runtime's default kernels fail it,
        reload in its non-saturating mode and check again."""
        from edgetl.deploy import fidelity

        result = fidelity.check(self)
        if result is None or result["faithful"] or target.name != "onnxruntime" or self.precise:
            return result, self.precise
        try:
            precise = self._stack.enter_context(target.load(artifact, device, precise=True))
        except UserError:  # that mode cannot load this model: the default runner stays, and the line says why
            return result, False
        self.runner = precise
        return fidelity.check(self), True

    def fidelity_line(self) -> str | None:
        from edgetl.deploy import fidelity

        return fidelity.line(self.fidelity, self.manifest["target"], self.precise) if self.fidelity else None

    def auto_line(self) -> str | None:
        """One line when the bundle's target was chosen by `--target auto` (edgetl.bench.auto) on another CPU kind
        than this one: another target may be faster here."""
        auto = self.manifest.get("auto")
        if not isinstance(auto, dict) or auto.get("cpu_id") == cpu_id():
            return None
        theirs = auto.get("cpu") or {}
        return (
            f"this bundle's target ({auto.get('winner')}) was chosen on {theirs.get('model', 'another CPU')} "
            f"({' '.join(theirs.get('flags', []))}), not on this CPU ({cpu_line()}): another target may be faster "
            "here; rerun `edgetl compile --target auto` on this machine"
        )

    def _read_spec(self, bundle) -> None:
        try:
            spec = self.manifest["input"]
            classes = self.manifest["classes"]
            if not isinstance(classes, list) or not classes:
                raise TypeError("classes is not a non-empty list")
            self.classes: list[str] = [str(c) for c in classes]
            self.input_name: str = str(spec["name"])
            self.input_format: str = spec["format"]
            frame = spec.get("frame_size")
            self.frame_size: tuple[int, int] | None = (int(frame[0]), int(frame[1])) if frame else None
            tok = self.manifest.get("tokenizer")
            self.preprocess = read_preprocess(self.manifest["preprocess"], self._root / tok if tok else None)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise UserError(
                f"{bundle}: manifest.json has a damaged input/classes/preprocess entry ({type(e).__name__}: {e}); "
                "rebuild the bundle with `edgetl compile` and `edgetl package`"
            ) from None
        if self.input_format not in ALL_FORMATS:
            raise UserError(
                f"{bundle}: manifest.json input format {self.input_format!r} is unknown; rebuild the bundle"
            )

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    @property
    def info(self) -> dict:
        """What actually runs: target, device, runtime precision (as the runtime reports it here)."""
        return {"target": self.manifest["target"], **self.runner.info}

    def feeds(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """One uint8 RGB frame [H, W, 3] -> the model's input dict (batch of one)."""
        if self.input_format == FLOAT_NCHW:
            return {self.input_name: self.preprocess(frame[None])}
        batch = frame[None]
        if self.frame_size and tuple(frame.shape[:2]) != self.frame_size:
            resized = resize_bilinear(batch, self.frame_size)
            batch = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        return {self.input_name: np.ascontiguousarray(batch)}

    @property
    def is_text(self) -> bool:
        return is_text_spec(self.manifest["preprocess"])  # the one answer (edgetl.texts), as run.json's

    def text_feeds(self, text: str) -> dict[str, np.ndarray]:
        """One text -> the model's inputs: the string itself (tokenizer in the graph) or host-made token ids."""
        return self.texts_feeds([text])

    def texts_feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.input_format == TEXT:
            return {self.input_name: strings(texts)}
        return self.preprocess(texts).feeds()

    def predict_text(self, text: str, top_k: int = 5) -> Prediction:
        if not self.is_text:
            raise UserError("--text: this bundle classifies images; give image files instead")
        start = time.perf_counter()
        return self._prediction(self.runner.infer(self.text_feeds(text)), start, top_k, text, f"--text {text!r}")

    def predict_frame(self, frame: np.ndarray, top_k: int = 5, path: str = "") -> Prediction:
        if self.is_text:
            raise UserError("this bundle classifies texts: use `edgetl predict BUNDLE --text '...'`")
        start = time.perf_counter()
        return self._prediction(self.runner.infer(self.feeds(frame)), start, top_k, path)

    def _prediction(self, out: dict, start: float, top_k: int, path: str, origin: str | None = None) -> Prediction:
        ms = (time.perf_counter() - start) * 1000.0
        probs = np.asarray(out[PROBS], np.float64)[0]
        if not np.isfinite(probs).all():  # NaN/Inf weights: argmax would still "answer" class 0
            raise UserError(
                f"{origin or path}: the model output is not finite (NaN/Inf probabilities); the bundle is broken: "
                "retrain or re-export the model, then rebuild the bundle with `edgetl compile` and `edgetl package`"
            )
        label = int(np.asarray(out[LABEL]).reshape(-1)[0])
        order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
        return Prediction(
            path=path,
            label=label,
            class_name=self.class_name(label),
            prob=round(float(probs[label]), 6),
            topk=[(self.class_name(int(i)), round(float(probs[i]), 6)) for i in order],
            ms=round(ms, 3),
        )

    def class_name(self, label: int) -> str:
        if not 0 <= label < len(self.classes):
            raise UserError(
                f"the model returned label {label} but the bundle lists {len(self.classes)} classes; rebuild it"
            )
        return self.classes[label]

    def predict_files(
        self, paths: Iterable[Path | str], top_k: int, strict: bool, warn: Callable[[str], None]
    ) -> Iterator[Prediction]:
        """Decode each file as training did; unusable files are skipped with one line (or stop with --strict).

        A path that does not exist or is a folder is a typo, not a bad image: it stops the run (UserError)."""
        skip = Skipper(strict, warn)

        def decode(data: bytes) -> np.ndarray:
            return decode_image(data, self.preprocess.decode_min_size)

        for path in paths:
            check_image_paths([path])
            frame = skip.decode(path, decode, BadImage)
            if frame is not None:
                yield self.predict_frame(frame, top_k, str(path))


def check_image_paths(paths: Iterable[Path | str]) -> None:
    """Refuse a path the user typed that names no file (missing, a dangling link, a folder): one line, exit 2.

    Files that exist but do not decode are not refused here: predict skips them with the reason (or --strict)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not an image; give image files (e.g. {path}/*.jpg)")
        if not path.exists():
            raise UserError(f"{path}: no such file; check the path (predict takes image files)")
