"""CLI commands for the bench stage (thin: parse options, call one library function)."""

from __future__ import annotations

COMMANDS: list = []
