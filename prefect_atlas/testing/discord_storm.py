"""One process of a cross-process alert storm: ``python -m prefect_atlas.testing.discord_storm``.

:func:`prefect_atlas.testing.discord.run_storm` starts these (the shared rate-limit test and
``bench/discord.py`` use it). The process builds its block, warms up (the database schema
and pool, so that start-up is not timed), writes ``<tag>.ready`` into the control folder,
waits for ``go`` there, then sends its alerts at once and prints one JSON line: how many
were delivered and the reasons of those that were not.

    python -m prefect_atlas.testing.discord_storm WEBHOOK_URL DATABASE_URL|- N CONTROL_DIR TAG
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from prefect_atlas import Channel, DatabaseBlock, DiscordBlock


async def main(url: str, database_url: str, n: int, control: Path, tag: str) -> None:
    """One storm child: wait for the start signal in ``control``, send ``n`` alerts to ``url``.

    ``database_url`` is the shared rate-limit database, or ``"-"`` for none. Prints one JSON
    line about what it did; :func:`prefect_atlas.testing.discord.run_storm` starts these.
    """
    state = DatabaseBlock(url=SecretStr(database_url), timeout=10) if database_url != "-" else None
    block = DiscordBlock(alerts=SecretStr(url), allowed_hosts=["127.0.0.1"], state_database=state)
    if state is not None:
        await state.asetup()
        await state.afetch_one("SELECT 1")
    (control / f"{tag}.ready").write_text("")
    deadline = time.monotonic() + 120
    while not (control / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 120 s")
        await asyncio.sleep(0.01)
    async with block:
        deliveries = await asyncio.gather(
            *(block.asend(f"{tag} alert {i}", channel=Channel.ALERTS) for i in range(n))
        )
    if state is not None:
        await state.aclose()
    print(
        json.dumps(
            {
                "delivered": sum(d.delivered for d in deliveries),
                "attempts": sum(d.attempts for d in deliveries),
                "reasons": [d.reason for d in deliveries if not d.delivered],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]))
