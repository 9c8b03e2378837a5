"""Deployment entrypoint of the scheduled health check (``flows/health.py:system_health``).

The code is ``prefect_atlas/flows/health.py``. Run it here with ``python flows/health.py``.
"""

import asyncio

from prefect_atlas.flows.health import system_health

__all__ = ["system_health"]

if __name__ == "__main__":
    print(asyncio.run(system_health()).table())
