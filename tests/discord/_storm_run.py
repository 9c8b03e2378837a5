"""The cross-process alert storm, now public in :mod:`prefect_atlas.testing.discord`."""

from prefect_atlas.testing.discord import StormResult, run_storm

__all__ = ["StormResult", "run_storm"]
