"""Start-up: a command imports only what it uses (issue 31). Timings live in benchmarks/startup.py; these tests
check the structure that makes them: which modules a command loads."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from edgetl.cli.main import COMMAND_MODULES

LOADED = """
import json, sys
from edgetl.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("\\nLOADED " + json.dumps(sorted(sys.modules)))
"""


def loaded_by(*argv: str, env: dict | None = None) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, timeout=600, env=env)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOADED "))
    return set(json.loads(line.removeprefix("LOADED ")))


def test_the_lazy_command_table_names_every_command_once():
    defined = {}
    for module in sorted(set(COMMAND_MODULES.values())):
        for command in importlib.import_module(module).COMMANDS:
            assert command.name not in defined, f"{command.name} defined twice"
            defined[command.name] = module
    assert defined == COMMAND_MODULES


def test_predict_imports_no_other_command_module(tmp_path):
    """`edgetl predict` (here on a missing bundle: the same imports up to opening it) loads the deploy commands'
    module only, not train's, export's or bench's."""
    loaded = loaded_by("predict", str(tmp_path / "missing.tar.gz"), str(tmp_path / "x.jpg"))
    assert "edgetl.cli.deploy" in loaded
    assert not {"edgetl.cli.train", "edgetl.cli.export", "edgetl.cli.bench", "torch", "onnx"} & loaded


def test_a_warm_run_imports_neither_torch_nor_timm_nor_scikit_learn(tmp_path):
    """The default task twice into one feature cache: the second run reads the features and fits the linear head
    in NumPy; the network is never built (what makes it start in well under a second: benchmarks/startup.py)."""
    env = {**os.environ, "EDGETL_CACHE_DIR": str(tmp_path / "cache")}
    train = ["train", "--cache-features", "--no-progress", "--overwrite"]
    cold = loaded_by(*train, "--out", str(tmp_path / "cold"), env=env)
    warm = loaded_by(*train, "--out", str(tmp_path / "warm"), env=env)
    heavy = {"torch", "timm", "torchvision", "sklearn", "torch._dynamo", "onnx"}
    assert {"torch", "timm"} <= cold  # the check can fail: a cache miss builds the backbone
    assert heavy & warm == set()
    runs = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("cold", "warm")]
    assert runs[1]["cache"]["hits"] == 1797 and runs[1]["cache"]["misses"] == 0
    assert runs[0]["metrics"]["val_acc"] == runs[1]["metrics"]["val_acc"] > 0.95


def test_a_warm_text_run_imports_no_torch(tmp_path):
    """The same for sentences (MiniLM on the bundled intents): keying the cache must not build the encoder (text.json's
    warm speed-up fell from 193x to 18x when the text extractor's module imported torch to say its version)."""
    env = {**os.environ, "EDGETL_CACHE_DIR": str(tmp_path / "cache")}
    intents = str(Path(__file__).parent / "data" / "text" / "intents.csv")
    train = ["train", "--data", intents, "--backbone", "minilm", "--no-progress", "--overwrite"]
    cold = loaded_by(*train, "--out", str(tmp_path / "cold"), env=env)
    warm = loaded_by(*train, "--out", str(tmp_path / "warm"), env=env)
    assert "torch" in cold and "torch" not in warm
    run = json.loads((tmp_path / "warm" / "run.json").read_text())
    assert run["cache"]["misses"] == 0 and run["cache"]["hits"] > 0


def test_a_one_shot_command_starts_without_the_collector_and_with_one_blas_thread(monkeypatch):
    """`edgetl predict` as the process's entry point: the cyclic garbage collector is off until its model is loaded
    (`started`), numpy's OpenBLAS runs one thread (set before numpy loads in that process); a user's value stays."""
    import gc

    from edgetl.cli import started
    from edgetl.cli.main import process_start

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    try:
        process_start(["--debug", "predict", "b.tar.gz", "x.jpg"])
        assert not gc.isenabled() and os.environ["OPENBLAS_NUM_THREADS"] == "1"
        started()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    try:
        process_start(["predict", "b.tar.gz", "x.jpg"])
        assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    finally:
        gc.enable()


def test_other_commands_and_scripts_keep_the_process_as_it_is(monkeypatch):
    import gc

    from edgetl.cli import started
    from edgetl.cli.main import process_start

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    process_start(["train", "--cache-features"])
    process_start(["--help"])
    started()  # with the collector on (a script, a test calling main([...])): nothing frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0 and "OPENBLAS_NUM_THREADS" not in os.environ


def test_a_bundle_opened_again_on_this_machine_is_neither_unpacked_nor_hashed(tmp_path):
    """The third predict of a bundle (the first unpacks it, the second hashes it all and records the stats, once the
    files are older than the racy window: edgetl.deploy.opened) loads no archive or hashing module."""
    import time

    from edgetl.deploy.bundle import package
    from tests.saturating import saturating_classifier

    model = saturating_classifier(tmp_path / "export")
    compile_ = ["compile", str(model), "--target", "onnxruntime", "--out", str(tmp_path / "ort")]
    subprocess.run([sys.executable, "-m", "edgetl", *compile_], check=True, capture_output=True)
    package(tmp_path / "ort", tmp_path / "ort.tar.gz")
    from PIL import Image

    Image.new("RGB", (12, 10), (200, 30, 30)).save(tmp_path / "x.png")
    env = {**os.environ, "EDGETL_CACHE_DIR": str(tmp_path / "cache")}
    predict = ["predict", str(tmp_path / "ort.tar.gz"), str(tmp_path / "x.png")]
    first = loaded_by(*predict, env=env)
    time.sleep(2.1)  # opened.RACY_NS
    loaded_by(*predict, env=env)
    third = loaded_by(*predict, env=env)
    archive = {"tarfile", "gzip", "hashlib", "tempfile", "shutil"}
    assert {"tarfile", "hashlib"} <= first  # the check can fail: unpacking needs both
    assert archive & third == set()
    assert (tmp_path / "cache" / "bundles" / ".opened").is_dir()
