"""The one way edgetl opens an ONNX Runtime session: compile checks, bundles, INT8 features, parity, bench.

Sequential execution, one inter-op thread, warnings about unused initializers silenced; `threads` None keeps
ORT's own intra-op default; `string_ops` registers onnxruntime-extensions' ops (an in-graph tokenizer).
`config` adds session config entries. `source` names a file the user handed in: then a model ORT cannot load is
one line naming it (exit 2). Without it (edgetl's own graphs) a load failure is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

from edgetl.errors import RuntimeMissing, UserError

CPU = "CPUExecutionProvider"
# u8u8 INT8 kernels: no 16-bit saturation on x86 CPUs without VNNI (slower where VNNI is present)
PRECISE_INT8 = {"session.x64quantprecision": "1"}


def session(
    model: Path | str | bytes,
    threads: int | None = None,
    level: str = "ORT_ENABLE_ALL",
    provider: str = CPU,
    optimized_to: Path | None = None,
    source: str | None = None,
    string_ops: bool = False,
    config: dict[str, str] | None = None,
):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissing("ONNX Runtime is not installed: pip install 'edgetl[onnxruntime]'") from None
    if provider not in ort.get_available_providers():
        raise UserError(
            f"--device: {provider} is not in this ONNX Runtime build "
            f"(has {', '.join(ort.get_available_providers())}); use --device CPU"
        )
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if string_ops:  # a tokenizer inside the graph: the onnxruntime-extensions custom op library
        try:
            import onnxruntime_extensions
        except ImportError:
            raise RuntimeMissing(
                "this text model tokenizes inside the graph: pip install onnxruntime-extensions "
                "(or compile it with --tokenizer host)"
            ) from None
        so.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    for key, value in (config or {}).items():  # session config entries (e.g. where optimized weights go)
        so.add_session_config_entry(key, value)
    if optimized_to is not None:
        so.optimized_model_filepath = str(optimized_to)
    model = model if isinstance(model, bytes) else str(model)
    if source is None:
        return ort.InferenceSession(model, sess_options=so, providers=[provider])
    try:
        return ort.InferenceSession(model, sess_options=so, providers=[provider])
    except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/NotImplemented classes
        raise UserError(f"{source}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None
