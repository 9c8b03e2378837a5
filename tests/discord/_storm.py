"""One storm process, now :mod:`prefect_atlas.testing.discord_storm` (run with ``-m``)."""

import asyncio
import sys
from pathlib import Path

from prefect_atlas.testing.discord_storm import main

__all__ = ["main"]

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]))
