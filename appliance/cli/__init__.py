"""The ``appliance`` command: one CLI for admins and analysts.

Every command reads its settings from ``APPLIANCE_*`` variables (and the optional TOML
file), so two appliances can run side by side with different ``APPLIANCE_HOME`` and
``APPLIANCE_MODELS_DIR``. A user-facing failure prints one line, ``error: ...``, on
stderr and exits 1; a usage mistake exits 2; no traceback reaches the user.
"""

from __future__ import annotations

import sys

import typer

from appliance.cli import (
    admin,
    asking,
    classification,
    corpus,
    doctor,
    models,
    review,
    runtime,
    serve,
)
from appliance.cli.common import app, eval_app
from appliance.errors import ApplianceError

app.add_typer(models.app, name="models")
app.add_typer(eval_app, name="eval")
runtime.register(app)
doctor.register(app)
corpus.register(app)
admin.register(app)
serve.register(app)
classification.register(app)
asking.register(app)
review.register(app)


def main() -> None:
    """Console entry point."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="appliance", standalone_mode=False)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option, unknown command
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except ApplianceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
