"""`edgetl deploy` over SSH: bytes sent for a first deploy (wheelhouse included) and for a head-only re-deploy.

Two bundles from one backbone with different heads, made as a user makes them: `edgetl train --cache-features` on
the digits with --seed 0 and --seed 1 (another split, so another head; the FP32 EfficientNet-Lite0 backbone is the
same), each exported, compiled for OpenVINO and packaged. The device is a real OpenSSH server on a loopback port
(tests/remote/sshd.py, the tests' harness) logging in as its own user, with an empty edgetl folder and no venv.

Deployed in turn: A (first deploy: the device env from wheels sent from here, then the bundle), B (head-only), A
again (stored on the device: only the switch). Two counts per deploy: what edgetl handed to ssh (scripts, wheels,
bundle chunks; `DeployResult.sent`), and every byte of the SSH connection in both directions, counted by a relay
given to ssh as its ProxyCommand (encryption, framing and the answers included). Then bundle A labels the 359
digits val images (PNG files) on the device (`deploy --predict`) and here: labels and probabilities compared. Writes
benchmarks/results/deploy_bytes.json. The claim: the head-only re-deploy sends under 1% of the first.
"""

from __future__ import annotations

import json
import platform
import secrets
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/remote/sshd.py: the device

from _common import RESULTS, WORK, _edgetl  # noqa: E402

from edgetl.machine import cpu_info  # noqa: E402
from edgetl.remote.deploy import DeployOptions, deploy  # noqa: E402
from edgetl.remote.ssh import SshOptions  # noqa: E402
from edgetl.remote.wheelhouse import edgetl_wheel  # noqa: E402
from tests.remote import sshd  # noqa: E402

RELAY = """
import json, os, signal, socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
counts = {"up": 0, "down": 0}
def record(*_):  # ssh ends its ProxyCommand with SIGHUP when the connection closes
    with open(sys.argv[3], "a") as f:
        f.write(json.dumps(counts) + "\\n")
    os._exit(0)
signal.signal(signal.SIGHUP, record)
signal.signal(signal.SIGTERM, record)
def pump(read, write, key):
    while True:
        data = read(65536)
        if not data:
            break
        counts[key] += len(data)
        write(data)
def down():
    pump(sock.recv, lambda d: (sys.stdout.buffer.write(d), sys.stdout.buffer.flush()), "down")
t = threading.Thread(target=down, daemon=True)
t.start()
pump(sys.stdin.buffer.read1, sock.sendall, "up")
sock.shutdown(socket.SHUT_WR)
t.join()
record()
"""


def bundle(seed: int) -> Path:
    """train (cached features) -> export -> compile openvino -> package, for one seed."""
    run, out = WORK / f"deploy-s{seed}", WORK / f"deploy-s{seed}-ov.tar.gz"
    if not out.is_file():
        _edgetl("train", "--cache-features", "--seed", str(seed), "--out", str(run), "--overwrite", "--no-progress")
        _edgetl("export", str(run))
        _edgetl("compile", str(run / "model.onnx"), "--target", "openvino", "--out", str(WORK / "build" / run.name))
        _edgetl("package", str(WORK / "build" / run.name), "--out", str(out))
    return out


def unpacked(bundle: Path) -> int:
    """Bytes of the bundle's files (what the device stores), not of the compressed tar.gz."""
    with tarfile.open(bundle) as tar:
        return sum(m.size for m in tar.getmembers() if m.isfile())


def wire(counts: Path) -> dict:
    """The relay's counts: written when the connection closes, a moment after the deploy returned."""
    deadline = time.monotonic() + 15
    while not counts.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    lines = [json.loads(x) for x in counts.read_text().splitlines()] if counts.is_file() else []
    counts.unlink(missing_ok=True)
    return {"up": sum(x["up"] for x in lines), "down": sum(x["down"] for x in lines), "connections": len(lines)}


def one(name: str, path: Path, device, opts: DeployOptions, counts: Path) -> dict:
    start = time.perf_counter()
    result = deploy(path, device.alias, opts, lambda m: print(f"  {m}", flush=True))
    return {
        "bundle": path.name,
        "bundle_id": result.bundle_id,
        "seconds": round(time.perf_counter() - start, 2),
        "sent": result.sent,
        "sent_total": result.bytes_sent,
        "wire": wire(counts),
        "wheels": result.wheels,
        "chunks_sent": result.push.chunks_sent,
        "chunks_total": result.push.chunks_total,
        "already_on_device": result.push.present,
    }


def device_labels_match(bundle_path: Path, device, opts: DeployOptions, scratch: Path) -> dict:
    """The digits val images as PNG files, labelled by the bundle on the device (`deploy --predict`) and here."""
    import dataclasses

    from edgetl.cli.demo import write_val_images
    from edgetl.deploy.predictor import Predictor

    record = json.loads((WORK / "deploy-s0" / "run.json").read_text())
    images = write_val_images(record, scratch / "val")
    files = tuple(p for p, _ in images)
    result = deploy(bundle_path, device.alias, dataclasses.replace(opts, predict=files), lambda m: None)
    on_device = {Path(p["path"]).name: p for p in result.predictions}
    with Predictor(bundle_path) as predictor:
        here = list(predictor.predict_files(list(files), 3, True, print))
    labels = sum(on_device[Path(h.path).name]["label"] == h.label for h in here)
    probs = sum(on_device[Path(h.path).name]["prob"] == h.prob for h in here)
    accuracy = sum(h.label == y for h, (_, y) in zip(here, images, strict=True)) / len(images)
    return {"images": len(images), "same_label": labels, "same_prob": probs, "accuracy_here": accuracy}


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    a, b = bundle(0), bundle(1)
    # one edgetl wheel for the three deploys (built from this checkout): edits made meanwhile are not measured
    wheel = edgetl_wheel()
    why = sshd.why_not()
    if why:
        sys.exit(f"no SSH server to deploy to: {why}")
    device = sshd.start()
    scratch = Path(tempfile.mkdtemp(prefix="edgetl-deploy-bytes-"))
    (scratch / "relay.py").write_text(RELAY)
    counts = scratch / "wire.jsonl"
    name = f"edgetl-bench-{secrets.token_hex(4)}"
    proxy = f"ProxyCommand={sys.executable} {scratch / 'relay.py'} %h %p {counts}"
    ssh = SshOptions(config=device.config, options=(proxy,))
    opts = DeployOptions(ssh=ssh, remote_dir=f"~/{name}", edgetl_wheel=wheel)
    try:
        runs = {}
        for label, path in (("first", a), ("head_only", b), ("again", a)):
            print(f"deploy {label}: {path.name}", flush=True)
            runs[label] = one(label, path, device, opts, counts)
        same = device_labels_match(a, device, opts, scratch)
        wire(counts)
    finally:
        sshd.stop(device)
        shutil.rmtree(device.home / name, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    sizes = {p.name: {"tar_gz": p.stat().st_size, "files": unpacked(p)} for p in (a, b)}
    first, head = runs["first"], runs["head_only"]
    doc = {
        "claim": "a head-only re-deploy sends under 1% of a first deploy (wheelhouse included)",
        "bundles": sizes,
        "deploys": runs,
        "head_only_over_first": round(head["sent_total"] / first["sent_total"], 5),
        "head_only_over_first_wire": round(
            (head["wire"]["up"] + head["wire"]["down"]) / (first["wire"]["up"] + first["wire"]["down"]), 5
        ),
        "head_only_bundle_over_bundle_files": round(head["sent"].get("bundle", 0) / sizes[b.name]["files"], 5),
        "digits_val_on_device": same,
        "cpu": cpu_info(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deploy_bytes.json").write_text(json.dumps(doc, indent=1) + "\n")
    for label, r in runs.items():
        print(f"{label:10s} sent {r['sent_total'] / 1e6:8.3f} MB {r['sent']}  wire up {r['wire']['up'] / 1e6:.3f} MB "
              f"down {r['wire']['down'] / 1e6:.3f} MB  {r['seconds']} s")  # fmt: skip
    print(f"head-only / first: {doc['head_only_over_first']:.4%} (wire {doc['head_only_over_first_wire']:.4%})")
    print(f"digits val on the device: {doc['digits_val_on_device']}")
    print(f"wrote {RESULTS / 'deploy_bytes.json'}")


if __name__ == "__main__":
    main()
