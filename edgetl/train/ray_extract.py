"""`edgetl extract --ray auto|ADDRESS`: the batches `edgetl.train.features.plan` makes, run as a Ray Data pipeline.

Reading and decoding run as Ray tasks; the backbone runs in a pool of stateful actors (one model load per actor,
`--workers` of them, `--threads-per-worker` CPU threads each), and every actor writes its batches into the shared
feature cache itself (its own segment files: edgetl.train.cache). The driver reports progress and the files that
did not decode. Batches are the same fixed slices of the sorted content keys as in one process, and every actor
builds the same extractor (its cache context is checked against the driver's), so the cache N workers write holds
the same keys and bit-identical features as one process's (tests/train/test_ray_extract.py).

Ray Data's defaults retry a task whose worker dies and restart an actor that dies (its batch is retried); a rerun
after a crash skips what is cached. Ray is needed only here: `pip install 'edgetl[scale]'`. The pickles below are this job's own rows (items,
decoded batches, skip reports) passed between its driver, tasks and actors, never a file a user hands in.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgetl.errors import UserError

# Decode tasks reserve no CPU (the actors hold them all), at most one in flight per actor: decoding the next batch
# overlaps the backbone running this one, as the decode thread does in one process (edgetl.train.features).
DECODE_CPUS = 0


@dataclass
class RayRunner:
    """Runs planned batches on Ray. `factory()` builds the extractor in each actor (picklable: a model path or
    backbone name, never a loaded model); `context` is the driver's cache context, which each actor must match."""

    address: str
    factory: Callable
    root: str
    context: dict
    dtype: str = "float32"
    workers: int | None = None
    threads: int = 1
    same_cpu: str | None = None  # the CPU id every actor must have: bit-identical features need the same kernels

    def __post_init__(self) -> None:
        self.timing: dict = {}  # per-worker overhead: seconds to the first finished batch, each actor's first batch

    def run(self, batches: list, pre, done) -> int:
        """Images written; `done(decoded, n)` is called on the driver per finished batch."""
        ray = connect(self.address)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows edgetl's bar
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.threads))
        rows = [{"i": i, "todo": len(todo), "items": pickle.dumps(todo)} for i, todo in batches]
        if not rows:
            return 0
        ds = ray.data.from_items(rows).map(
            _decode_row,
            fn_kwargs={"pre": pre},
            num_cpus=DECODE_CPUS,
            compute=ray.data.TaskPoolStrategy(size=min(workers, len(rows))),
        )
        ds = ds.map(
            _Worker,
            fn_constructor_kwargs={
                "factory": self.factory,
                "root": self.root,
                "context": self.context,
                "dtype": self.dtype,
                "threads": self.threads,
                "same_cpu": self.same_cpu,
            },
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
            num_cpus=self.threads,
        )
        written, t0, first = 0, time.perf_counter(), []
        try:
            for row in ds.iter_rows():
                written += row["n"]
                self.timing.setdefault("to_first_batch_s", time.perf_counter() - t0)
                if row["first_s"]:
                    first.append(row["first_s"])
                done(pickle.loads(row["failed"]), row["todo"])
        except Exception as e:  # noqa: BLE001 - a worker's UserError comes back wrapped by Ray
            raise _unwrap(e) from None
        self.timing.update(workers=workers, actor_first_batch_s=first, seconds=time.perf_counter() - t0)
        return written


def _decode_row(row: dict, pre) -> dict:
    from edgetl.train.features import decode_batch

    decoded = decode_batch(pickle.loads(row["items"]), pre)
    return {"i": row["i"], "todo": row["todo"], "decoded": pickle.dumps(decoded, protocol=5)}


class _Worker:
    """One Ray actor: one extractor (model loaded once), one cache writer."""

    def __init__(self, factory, root: str, context: dict, dtype: str, threads: int, same_cpu: str | None) -> None:
        from edgetl.machine import cpu_id, cpu_line
        from edgetl.train.cache import FeatureCache

        if same_cpu and cpu_id() != same_cpu:
            raise UserError(
                f"--ray: worker on {socket.gethostname()} has another CPU kind ({cpu_line()}) than the driver; its "
                "kernels, so its features' last bits, may differ: run the workers on the driver's CPU kind"
            )
        _threads(threads)
        self.extractor = factory()
        got = self.extractor.context()
        if any(context.get(k) != v for k, v in got.items()):
            raise UserError(
                f"--ray: worker on {socket.gethostname()} computes features in another context ({_diff(got, context)}); "
                "install the driver's versions on every worker"
            )
        self.cache = FeatureCache(root, context, _warn, np.dtype(dtype).type).open()
        self.batches = 0

    def __call__(self, row: dict) -> dict:
        t = time.perf_counter()
        decoded = pickle.loads(row["decoded"])
        keys = [it.key for it in decoded.kept]
        if keys:
            self.cache.write_shard(keys, np.asarray(self.extractor(decoded.x), np.float32))
        decoded.kept, decoded.x = [], np.zeros(0, np.float32)  # the driver only reports what failed
        first = time.perf_counter() - t if self.batches == 0 else 0.0  # the model loads on the first batch
        self.batches += 1
        return {"i": row["i"], "todo": row["todo"], "n": len(keys), "failed": pickle.dumps(decoded), "first_s": first}


def _threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def _diff(got: dict, want: dict) -> str:
    return "; ".join(f"{k}: {got.get(k)!r} here, {want.get(k)!r} on the driver" for k in got if got[k] != want.get(k))


def _warn(message: str) -> None:
    print(f"warning: {message}", flush=True)


def _unwrap(e: BaseException) -> BaseException:
    """The UserError a worker raised, out of Ray's wrappers; anything else as Ray reported it."""
    seen = e
    while seen is not None:
        if isinstance(seen, UserError):
            return UserError(str(seen.args[0]) if seen.args else str(seen))
        seen = seen.__cause__ or seen.__context__
    return e


def connect(address: str):
    """ray, initialised: `auto` joins the cluster in $RAY_ADDRESS or the one started on this machine, else starts a
    local one; an ADDRESS (host:port or ray://host:port) must answer within 5 s (one line, exit 2, if not)."""
    try:
        import ray
        import ray.data  # noqa: F401 - ray.data is a submodule: imported here, used as ray.data
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'edgetl[scale]'") from None
    if ray.is_initialized():
        return ray
    if address != "auto":
        _reachable(address)
    for name in ("ray", "ray.data"):  # the driver's terminal shows edgetl's progress and errors, not Ray's info logs
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ core logs to its session folder instead
    try:
        ray.init(
            address=None if address == "auto" else address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}},
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--ray {address}: cannot join the Ray cluster ({first}); check the address") from None
    return ray


def _reachable(address: str) -> None:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray {address}: give auto, HOST:PORT (the head's GCS port, 6379) or ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(
            f"--ray {address}: unreachable ({why}); start the cluster (`ray start --head`) or fix the address"
        ) from None
