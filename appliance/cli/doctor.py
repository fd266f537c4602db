"""``appliance doctor``: is this installation healthy and offline?"""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import print_json, settings


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    probe_outbound: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Self-test of the network guard: try to connect out and show it is refused.",
        ),
    ] = None,
) -> None:
    """Check models (sha256), runtimes, hardware and data dirs, offline; exit 1 on any failure."""
    from appliance.doctor import run_doctor

    report = run_doctor(settings(), probe_outbound)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "checks": [_as_dict(c) for c in report.checks],
                "blocked_network_attempts": report.blocked,
            }
        )
    else:
        for c in report.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name:14} {c.detail}")
        if report.blocked:
            for attempt in report.blocked:
                print(f"FAIL network       refused outbound attempt: {attempt}")
        else:
            print("ok   network        no outbound connection was attempted")
        print("healthy" if report.ok else "unhealthy: see FAIL lines above")
    if not report.ok:
        raise typer.Exit(1)


def _as_dict(c: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(c) and not isinstance(c, type)
    return asdict(c)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
