"""Shared by every test folder: runtime caches never touch ~/.cache, and the CLI run in-process."""

from __future__ import annotations

import pytest

from edgetl.cli.main import main


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Feature caches, OpenVINO blobs and TensorRT engines go to a temp folder, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGETL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`edgetl ARGV...` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


FAST_BENCH = ("--duration", "0.05", "--warmup", "0", "--min-iters", "5")  # smoke-test timing, never a claim
