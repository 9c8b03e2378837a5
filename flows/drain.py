"""Deployment entrypoint of the spool drain (``flows/drain.py:drain_events``).

The code is ``prefect_atlas/flows/drain.py``. Run it here with ``python flows/drain.py``.
"""

import asyncio

from prefect_atlas.flows.drain import drain_events

__all__ = ["drain_events"]

if __name__ == "__main__":
    print(asyncio.run(drain_events()))
