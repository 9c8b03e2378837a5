"""Deployment entrypoint of the relay into Prefect's events (``flows/relay.py:relay_events``).

The code is ``prefect_atlas/flows/relay.py``. Run it here with ``python flows/relay.py``.
"""

import asyncio

from prefect_atlas.flows.relay import relay_events

__all__ = ["relay_events"]

if __name__ == "__main__":
    print(asyncio.run(relay_events()))
