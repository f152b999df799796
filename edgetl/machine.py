"""What this machine's CPU is, as far as it changes which kernels run (standard library only: device-safe).

INT8 kernels differ most: x86 CPUs with AVX-512 VNNI, AVX-VNNI or AMX multiply u8 x s8 into 32-bit sums, while
CPUs with AVX2 only (or AVX-512 without VNNI) use a pair-wise multiply-add that saturates at 16 bits, so a
runtime's INT8 output there can differ from what the graph says (edgetl.quant.fidelity measures it).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # 32-bit INT8 dot products: no 16-bit saturation


# /proc/cpuinfo flag -> the name NumPy's CPUID reading gives it (NumPy has no key for AVX-VNNI or AMX)
CPUID_NAMES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16"}


def cpu_info() -> dict:
    """CPU model and the flags that change which kernels run (AVX-512, VNNI, AMX).

    /proc/cpuinfo names the model; the flags are checked against what CPUID tells this process (NumPy reads it at
    import), which is what the runtimes dispatch on. Where the two disagree (a VM or an emulator that hides
    features: `masked`), CPUID wins and the flags it cannot confirm (AVX-VNNI, AMX) are dropped."""
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    # platform.processor() runs `uname -p` in a subprocess on Linux (~10 ms of every `edgetl predict`): only where
    # /proc/cpuinfo names no model
    model = model or platform.processor() or platform.machine()
    cpuid = _cpuid()
    masked = False
    if cpuid:
        masked = any(f in flags and not cpuid.get(name, False) for f, name in CPUID_NAMES.items())
        flags = {f for f in flags if f not in CPUID_NAMES} | {f for f, name in CPUID_NAMES.items() if cpuid.get(name)}
        if masked:
            flags -= {"avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}
    info = {
        "model": model,
        "flags": [f for f in CPU_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    return {**info, "masked": True} if masked else info


def _cpuid() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def int8_dot(cpu: dict | None = None) -> str:
    """'vnni' where the CPU lists a 32-bit INT8 dot product, 'saturating' on other x86 CPUs, 'other' elsewhere
    (ARM and others: their own kernels). Read from /proc/cpuinfo: a hint for messages, never a verdict; the
    verdict is a measurement (edgetl.quant.fidelity, edgetl.deploy.fidelity)."""
    cpu = cpu or cpu_info()
    if cpu["machine"] not in ("x86_64", "AMD64", "i686", "i386"):
        return "other"
    return "vnni" if any(f in cpu["flags"] for f in INT8_DOT_FLAGS) else "saturating"


def cpu_class(cpu: dict | None = None) -> str:
    """What timings and INT8 results are grouped by: 'vnni' (a 32-bit INT8 dot product), 'avx2' or 'x86' (x86
    without one, with or without AVX2), else the machine ('aarch64', ...)."""
    cpu = cpu or cpu_info()
    kind = int8_dot(cpu)
    if kind == "saturating":
        return "avx2" if "avx2" in cpu["flags"] else "x86"
    return kind if kind == "vnni" else cpu["machine"]


def cpu_line(cpu: dict | None = None) -> str:
    cpu = cpu or cpu_info()
    flags = " ".join(cpu["flags"]) or "none of " + " ".join(CPU_FLAGS)
    masked = ", features masked by a VM or emulator" if cpu.get("masked") else ""
    return f"{cpu['model']} ({cpu['machine']}; {flags}{masked})"


def cpu_key(cpu: dict | None = None) -> list:
    """The CPU model, flags and machine: what results measured on one CPU kind are keyed by."""
    cpu = cpu or cpu_info()
    return [cpu["model"], cpu["flags"], cpu["machine"]]


def cpu_id(cpu: dict | None = None) -> str:
    """A short hash of `cpu_key`, for keys and records that name the CPU kind in a few characters."""
    import hashlib

    return hashlib.sha256(json.dumps(cpu_key(cpu)).encode()).hexdigest()[:16]
