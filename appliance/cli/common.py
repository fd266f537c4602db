"""What every CLI command shares: the Typer app, settings and services, output helpers."""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from appliance.config import Settings, load_settings
from appliance.errors import ApplianceError
from appliance.services import Services

app = typer.Typer(
    name="appliance",
    help="Offline document review and classification appliance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

eval_app = typer.Typer(
    help="Measure retrieval, answers and classification on labelled data.",
    no_args_is_help=True,
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


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry, e.g. in a container with a bare uid
        return "cli:unknown"


@contextmanager
def audited(
    svc: Services, action: str, *, tenant: str | None, resource: str
) -> Iterator[dict[str, Any]]:
    """Record a state-changing CLI action in the audit log, whatever its outcome.

    Yields the payload dict: what the command puts there is encrypted in the log. A refused
    request (a 4xx error) is logged as ``refused``, a failure as ``error``.
    """
    from appliance.audit import AuditEvent

    payload: dict[str, Any] = {}
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield payload
    except ApplianceError as exc:
        outcome = "refused" if exc.status < 500 else "error"
        payload["error"] = exc.detail
        raise
    except BaseException:
        outcome = "error"
        raise
    finally:
        # an event about a tenant that does not exist (any more) is a system event
        known = tenant is not None and svc.tenants().exists(tenant)
        svc.audit().append(
            AuditEvent(
                actor=cli_actor(),
                tenant=tenant if known else None,
                action=action,
                resource=resource if known or tenant is None else f"tenant:{tenant} {resource}",
                outcome=outcome,  # type: ignore[arg-type]
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                models={},
                payload=payload,
            )
        )
