"""The ``prefect-atlas`` command line (also ``python -m prefect_atlas``).

One module per command group: :mod:`~prefect_atlas.cli.app` (the root app and :func:`main`),
:mod:`~prefect_atlas.cli.database` (``setup``, ``health``, ``metrics``),
:mod:`~prefect_atlas.cli.events` (``events replay|drain|dead-letters``),
:mod:`~prefect_atlas.cli.blocks` (``blocks from-env``), :mod:`~prefect_atlas.cli.alerts`
(``alerts install-automation``) and :mod:`~prefect_atlas.cli.demo` (``demo``).

Exit codes: 0 success; 1 the command failed, or ``health`` found something down (one line on
stderr: ``prefect-atlas: error: <what failed and the fix>``); 2 usage error; 130 interrupted.
"""

from prefect_atlas.cli.app import app, main

__all__ = ["app", "main"]
