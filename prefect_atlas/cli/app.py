"""The root ``prefect-atlas`` app and :func:`main`.

Built on cyclopts, the library Prefect's own CLI uses: commands are plain ``async def``
functions whose signatures are the options, and cyclopts runs them on an event loop. Each
command group is one module of this package, imported here directly (no module path strings,
and no module imports back from this one); every module keeps its heavy imports (Prefect
flows, pgserver, cloud SDKs) inside its commands so that ``prefect-atlas --help`` stays fast.

Exit codes: 0 success; 1 the command failed, or ``health`` found something down (one line on
stderr, ``prefect-atlas: error: <what failed and the fix>``); 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import cyclopts
from cyclopts import App, Parameter

from prefect_atlas._version import __version__
from prefect_atlas.cli import database
from prefect_atlas.cli._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    explain,
    report,
    require_command,
)
from prefect_atlas.cli.alerts import alerts
from prefect_atlas.cli.blocks import blocks
from prefect_atlas.cli.demo import demo
from prefect_atlas.cli.events import events

HELP = f"""Atlas infrastructure for Prefect: database, vault, events, alerts.

Exit codes:

- {EXIT_OK}: success
- {EXIT_FAILED}: the command failed, or `health` found something down; errors are one line on
  stderr: `prefect-atlas: error: <what failed and the fix>`
- {EXIT_USAGE}: usage error (unknown command or option, missing or invalid value)
- {EXIT_INTERRUPTED}: interrupted (Ctrl-C)"""

app = App(
    name="prefect-atlas",
    help=HELP,
    help_format="markdown",
    version=f"prefect-atlas {__version__}",
    version_format="plaintext",
    # Flags are plain switches (`--json`), without cyclopts' `--no-json` twins.
    default_parameter=Parameter(negative=()),
    # main() turns every outcome into one error line and an exit code.
    result_action="return_value",
    exit_on_error=False,
    print_error=False,
    suppress_keyboard_interrupt=False,
)
app.command(database.health)
app.command(database.setup)
app.command(demo)
app.command(database.metrics)
app.command(blocks)
app.command(events)
app.command(alerts)
require_command(app, "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``argv`` defaults to ``sys.argv[1:]``) and return its exit code:
    0 ok, 1 failed (one line on stderr naming what failed and the fix), 2 usage error,
    130 interrupted."""
    tokens = sys.argv[1:] if argv is None else list(argv)
    try:
        result = app(tokens)
    except cyclopts.CycloptsError as exc:
        command = " ".join(["prefect-atlas", *(exc.command_chain or [])])
        message = " ".join(str(exc).split())
        end = "" if message.endswith((".", "?")) else "."
        report(f"{message}{end} See `{command} --help`.")
        return EXIT_USAGE
    except UsageError as exc:
        report(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a CLI prints one clear line, not a traceback
        report(explain(exc))
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK
