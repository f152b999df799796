"""CLI commands for the export stage (thin: parse options, call one library function)."""

from __future__ import annotations

COMMANDS: list = []
