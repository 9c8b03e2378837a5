"""Deployment entrypoint of the projection rebuild (``flows/replay.py:replay_projection``).

The code is ``prefect_atlas/flows/replay.py``. Run it here with ``python flows/replay.py``.
"""

import asyncio

from prefect_atlas.flows.replay import replay_projection

__all__ = ["replay_projection"]

if __name__ == "__main__":
    print(asyncio.run(replay_projection()))
