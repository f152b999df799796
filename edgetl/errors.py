"""User-facing errors: one line naming the file or option and the fix, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad usage or bad input. The CLI prints `error: <message>` and exits with code 2."""

    exit_code = 2


class RuntimeMissing(UserError):
    """An optional runtime (openvino, onnxruntime, tensorrt) is not installed; the message says how to install it."""
