"""`edgetl extract`: it fills the cache `edgetl train` reads; N `--shard` jobs and a local Ray cluster of 2 workers
write the same cache one process writes (same keys, bit-identical features); bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.train.cache import list_contexts
from edgetl.train.segments import read_block, read_index
from tests.conftest import run_cli
from tests.photos import make_photo_folder

pytest.importorskip("torch")


def entries(root: Path) -> dict[tuple[str, str], bytes]:
    """Every (context, content key) -> the feature row's bytes, read from the segment files themselves."""
    out: dict[tuple[str, str], bytes] = {}
    for ctx in list_contexts(root):
        for idx in sorted(Path(ctx["path"]).glob("seg-*.idx")):
            records, _ = read_index(idx)
            with open(idx.with_suffix(".bin"), "rb") as f:
                for rec in records:
                    rows = read_block(f, rec)
                    for key, row in zip(rec.key_list(), rows, strict=True):
                        out.setdefault((ctx["key"], key.hex()), row.tobytes())
    return out


def edgetl(*argv, env=None) -> subprocess.CompletedProcess:
    """`edgetl ARGV` in its own process, as a scheduler's job would run it."""
    cmd = [sys.executable, "-m", "edgetl", *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "data", per_class=6)


def test_extract_then_train_finds_every_feature_cached(capsys, tmp_path, photos):
    cache = tmp_path / "cache"
    code, out, err = run_cli(capsys, "extract", "--data", photos, "--cache-dir", cache, "--no-progress")
    assert code == 0, err
    assert "36" in out and "fp32" in out  # 6 classes x 6 photos, computed
    code, _, err = run_cli(
        capsys, "train", "--data", photos, "--cache-dir", cache, "--out", tmp_path / "run", "--no-progress"
    )
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["cache"]["misses"] == 0 and run["cache"]["hits"] == 36


def test_two_shard_jobs_write_what_one_process_writes(capsys, tmp_path, photos):
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, err = run_cli(capsys, "extract", "--data", photos, "--cache-dir", one, "--no-progress")
    assert code == 0, err
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "edgetl", "extract", "--data", str(photos), "--cache-dir", str(two)]
            + ["--shard", f"{i}/2", "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err
    a, b = entries(one), entries(two)
    assert len(a) == 36 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)  # byte for byte


def test_int8_shard_jobs_build_the_same_model_and_train_hits_them_all(capsys, tmp_path, photos):
    cache = tmp_path / "cache"
    int8 = ("--quantize", "int8", "--target", "onnxruntime", "--calib-size", "16")
    for i in range(2):
        done = edgetl("extract", "--data", photos, "--cache-dir", cache, "--shard", f"{i}/2", *int8, "--no-progress")
        assert done.returncode == 0, done.stderr
    assert len(list_contexts(cache)) == 2  # FP32 and INT8: the second job quantized to the same model bytes
    code, _, err = run_cli(
        capsys, "train", "--data", photos, "--cache-dir", cache, "--out", tmp_path / "run", *int8, "--no-progress"
    )
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["cache"]["misses"] == 0 and run["cache"]["hits"] == 72


def test_a_ray_cluster_of_two_workers_writes_what_one_process_writes(capsys, tmp_path, photos):
    pytest.importorskip("ray", reason="Ray is the edgetl[scale] extra: pip install 'edgetl[scale]'")
    one, ray = tmp_path / "one", tmp_path / "ray"
    for data in (photos, "digits"):
        code, _, err = run_cli(capsys, "extract", "--data", data, "--cache-dir", one, "--no-progress")
        assert code == 0, err
        # a local cluster of its own (RAY_ADDRESS unset: `auto` starts one), 2 actors of 1 thread each; the
        # driver above ran at the default thread count: short batches are padded, so the threads do not matter
        done = edgetl(
            "extract", "--data", data, "--cache-dir", ray, "--ray", "auto", "--workers", 2, "--no-progress",
            env={"RAY_ADDRESS": ""},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "on Ray (auto)" in done.stdout
    a, b = entries(one), entries(ray)
    assert len(a) == 36 + 1797 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)  # byte for byte


@pytest.mark.parametrize("spec", ["5/4", "4/4", "1/0", "a/b", "3"])
def test_a_bad_shard_is_one_line(capsys, spec):
    code, _, err = run_cli(capsys, "extract", "--shard", spec)
    assert code == 2 and err.count("\n") == 1 and f"--shard {spec}: give i/N" in err


def test_an_unreachable_ray_address_is_one_line(capsys, tmp_path):
    pytest.importorskip("ray", reason="Ray is the edgetl[scale] extra")
    code, _, err = run_cli(capsys, "extract", "--ray", "127.0.0.1:1", "--cache-dir", tmp_path / "c")
    assert code == 2 and err.count("\n") == 1 and "--ray 127.0.0.1:1: unreachable" in err
    assert not (tmp_path / "c").exists()  # stopped before anything was built or written


def test_ray_options_without_ray_are_refused(capsys):
    code, _, err = run_cli(capsys, "extract", "--workers", "2")
    assert code == 2 and "add --ray auto" in err


def test_a_cache_of_another_edgetl_version_is_refused_and_left_alone(capsys, tmp_path, photos):
    old = tmp_path / "cache" / "v1" / "abc"
    old.mkdir(parents=True)
    (old / "shard-1.safetensors").write_bytes(b"features of an older edgetl")
    before = sorted((p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    code, _, err = run_cli(capsys, "extract", "--data", photos, "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "another edgetl version" in err
    after = sorted((p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    assert after == before
