"""Deployment entrypoint of the event log's maintenance
(``flows/maintenance.py:event_maintenance``).

The code is ``prefect_atlas/flows/maintenance.py``. Run it here with
``python flows/maintenance.py``.
"""

import asyncio

from prefect_atlas.flows.maintenance import event_maintenance

__all__ = ["event_maintenance"]

if __name__ == "__main__":
    print(asyncio.run(event_maintenance()))
