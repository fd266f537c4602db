"""What every CLI command shares: the Typer app, settings and services, output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from appliance.config import Settings, load_settings
from appliance.services import Services

app = typer.Typer(
    name="appliance",
    help="Offline document review and classification appliance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def settings() -> Settings:
    return load_settings()


def services() -> Services:
    return Services.from_settings(settings())


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps mypy satisfied
