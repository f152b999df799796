"""The device-side edgetl, run over SSH from the host: the load check before a bundle is activated (after building a
TensorRT engine there), `edgetl predict` on copied images, and `edgetl bench` whose JSON comes back stamped with the
device's probe. Device-side runs keep their caches under ROOT/cache (EDGETL_CACHE_DIR): OpenVINO's compiled blobs,
TensorRT engines and the TensorRT timing cache stay on the device between deploys.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetl.contract import TEXT_FORMATS
from edgetl.errors import UserError
from edgetl.remote.ssh import Result, quote_word

CACHE = "cache"  # under the remote root: the device-side EDGETL_CACHE_DIR


@dataclass(frozen=True)
class BenchOptions:
    out: Path  # where the stamped JSON is written on the host
    duration: float = 5.0
    warmup: float = 1.0
    min_iters: int = 50
    batch: str = "1"
    modes: str = "model,end_to_end"
    images: tuple[Path, ...] = ()  # default: the host's sample photos (as `edgetl bench` uses)

    def cases(self) -> int:
        return len([b for b in self.batch.split(",") if b.strip()]) * len([m for m in self.modes.split(",") if m])


class LoadFailed(UserError):
    """The device's edgetl could not open a bundle (`why`: its error line); `deploy --target auto` drops it."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def edgetl_command(root: str, venv: str, args: list[str]) -> str:
    """`env EDGETL_CACHE_DIR=ROOT/cache VENV/bin/edgetl ARGS...` for the device's shell."""
    words = ["env", f"EDGETL_CACHE_DIR={root}/{CACHE}", f"{venv}/bin/edgetl", *args]
    return " ".join(quote_word(w) for w in words)


def device_edgetl(session, venv: str, args: list[str], timeout: float, what: str, on_stderr=None) -> Result:
    command = edgetl_command(session.root, venv, args)
    return session.conn.run(command, timeout=timeout, what=what, on_stderr=on_stderr)


def error_line(result: Result) -> str:
    """What the device's edgetl said went wrong: its `error:` line, else its last line."""
    lines = [x.strip() for x in result.stderr.splitlines() if x.strip()]
    errors = [x.removeprefix("error: ") for x in lines if x.startswith("error:")]
    return (errors or lines or [f"exit code {result.code}"])[-1]


def engine_build_args(bundle_dir: str) -> list[str]:
    """`edgetl build-engine` on the unpacked bundle folder: the engine is written into it, the timing cache into
    ROOT/cache/tensorrt/<version>/ (edgetl.deploy.targets.tensorrt.timing_cache_path under EDGETL_CACHE_DIR)."""
    return ["build-engine", bundle_dir]


def load_check(session, venv: str, bundle_dir: str, build_engine: bool, say: Callable[[str], None]) -> str | None:
    """Build the TensorRT engine there when asked, then open the bundle with the device's edgetl (`edgetl doctor
    BUNDLE`: the manifest and every sha256, the runtime loading the model, the INT8 probe). Returns doctor's
    bundle line."""
    target = session.conn.target
    if build_engine:
        say(f"building the TensorRT engine on the device (timing cache in {session.root}/{CACHE})")
        built = device_edgetl(session, venv, engine_build_args(bundle_dir), 3600, "the TensorRT engine build", say)
        if built.code != 0:
            raise UserError(f"{target}: the TensorRT engine build failed there ({error_line(built)}); "
                            "the active bundle is unchanged")  # fmt: skip
    checked = device_edgetl(session, venv, ["doctor", bundle_dir], 600, "the load check")
    if checked.code != 0:
        raise LoadFailed(
            f"{target}: the bundle does not load on the device ({error_line(checked)}); the active bundle is unchanged",
            error_line(checked),
        )
    lines = checked.stdout.decode(errors="replace").splitlines()
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("bundle ")), None)


def remote_predict(session, venv: str, files: tuple[Path, ...], top_k: int = 3) -> list[dict]:
    """Copy the images to the device, label them with the active bundle there; one dict per image (host paths)."""
    for f in files:
        if not Path(f).is_file():
            raise UserError(f"--predict {f}: no such file")
    folder = session.folder("images")
    remote = {f"{folder}/{i:03d}-{Path(f).name}": Path(f) for i, f in enumerate(files)}
    session.conn.put([(local, path) for path, local in remote.items()], "images", "the image upload")
    args = ["predict", f"{session.root}/current", *remote, "--json", "--top-k", str(top_k)]
    result = device_edgetl(session, venv, args, 600, "edgetl predict")
    if result.code != 0:
        raise UserError(f"{session.conn.target}: edgetl predict failed on the device ({error_line(result)})")
    out = []
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            out.append({**record, "path": str(remote.get(record["path"], record["path"]))})
    return out


def _bench_inputs(session, manifest: dict, opts: BenchOptions) -> list[str]:
    """The images `edgetl bench` on the host would time (brought to the frame size, as JPEGs), copied to the
    device; text bundles use bench's own sample texts."""
    from edgetl.bench.harness import CAMERA_FRAME, load_jpegs

    if manifest["input"]["format"] in TEXT_FORMATS:
        return []
    frame = tuple(manifest["input"].get("frame_size") or CAMERA_FRAME)
    jpegs = load_jpegs(list(opts.images), frame)
    folder = session.folder("bench-images")
    with tempfile.TemporaryDirectory(prefix="edgetl-bench-") as tmp:
        files = []
        for i, data in enumerate(jpegs):
            (Path(tmp) / f"{i:02d}.jpg").write_bytes(data)
            files.append((Path(tmp) / f"{i:02d}.jpg", f"{folder}/{i:02d}.jpg"))
        session.conn.put(files, "images", "the bench images upload")
    return ["--images", folder, "--frame-size", f"{frame[0]}x{frame[1]}"]


def remote_bench(session, venv: str, opts: BenchOptions, stamp: dict, say, echo) -> dict:
    """`edgetl bench --json` on the active bundle there; the JSON comes back with `device` = `stamp` (the probe,
    host, bundle) and is written to opts.out. Its format is the one `edgetl bench --compare` reads."""
    from edgetl.bench.report import write_json

    out = f"{session.folder('bench')}/bench.json"
    args = ["bench", f"{session.root}/current", "--json", out, "--duration", str(opts.duration)]
    args += ["--warmup", str(opts.warmup), "--min-iters", str(opts.min_iters), "--batch", opts.batch]
    args += ["--mode", opts.modes, *_bench_inputs(session, stamp["manifest"], opts)]
    estimate = opts.cases() * (opts.warmup + opts.duration) + 5
    target = session.conn.target

    def forward(line: str) -> None:  # the device's own progress lines; its "wrote <device path>" is not news here
        if line.strip() and not line.startswith("wrote "):
            say(f"{target}: {line}")

    with _ticker(f"benchmarking on {target}", estimate):
        result = device_edgetl(session, venv, args, 4 * estimate + 600, "edgetl bench", forward)
    if result.code != 0:
        raise UserError(f"{target}: edgetl bench failed on the device ({error_line(result)})")
    echo(result.stdout.decode(errors="replace").rstrip("\n"))
    copied = session.conn.run(f"cat {quote_word(out)}", what="copying the bench results back")
    try:
        doc = json.loads(copied.stdout)
    except ValueError:
        raise UserError(f"{target}: the bench results did not come back ({error_line(copied)})") from None
    doc["device"] = {k: v for k, v in stamp.items() if k != "manifest"}
    write_json(opts.out, doc)
    return doc


@contextlib.contextmanager
def _ticker(label: str, seconds: float) -> Iterator[None]:
    """A host-side progress bar over the expected duration (terminals only), while the device works."""
    from edgetl.progress import bar

    stop = threading.Event()
    with bar(label, total=max(int(seconds), 1)) as b:
        start = time.monotonic()

        def tick() -> None:
            while not stop.wait(0.5):
                b.update(completed=min(time.monotonic() - start, seconds), status="on the device")

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
