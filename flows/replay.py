"""Deployment entrypoint of the incremental projection (``flows/replay.py:replay_projection``).

The code is ``prefect_atlas/flows/replay.py``: each run adds the events committed since the
last one (``--rebuild``: recount from the first event). Run it here with
``python flows/replay.py [--rebuild]``.
"""

import asyncio
import sys

from prefect_atlas.flows.replay import replay_projection

__all__ = ["replay_projection"]

if __name__ == "__main__":
    print(asyncio.run(replay_projection(rebuild="--rebuild" in sys.argv[1:])))
