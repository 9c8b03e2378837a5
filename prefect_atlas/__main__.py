"""``python -m prefect_atlas`` is the ``prefect-atlas`` command."""

from prefect_atlas.cli import main

raise SystemExit(main())
