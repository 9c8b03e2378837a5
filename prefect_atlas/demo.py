"""``prefect-atlas demo``: a new user's first run, on embedded defaults.

No server to install and no credentials: Prefect runs its ephemeral API, the database is the
embedded PostgreSQL under ``$ATLAS_HOME``, the vault is a folder there, and alerts go to the
log because no Discord webhook is configured. The demo saves its blocks as ``atlas-demo``
(never touching a user's ``default`` blocks), runs the ingest flow on the sample data, runs
it again with a deliberate failure to show the failure alert, rebuilds the projection from
the event log, and prints where everything went. A second run reuses the database.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect_atlas.database import DatabaseBlock
from prefect_atlas.discord import DiscordBlock
from prefect_atlas.exceptions import MissingExtraError
from prefect_atlas.vault import VaultBlock

DEMO_BLOCK = "atlas-demo"


def demo_database() -> DatabaseBlock:
    """The demo's database block: the embedded PostgreSQL under ``$ATLAS_HOME``."""
    return DatabaseBlock()


def precheck() -> None:
    """Fail at once, before any work, when the demo cannot run to its end.

    The demo's database is the embedded PostgreSQL, which needs pgserver: without it, raise
    :class:`~prefect_atlas.MissingExtraError` naming ``pip install 'prefect-atlas[embedded]'``
    rather than failing half-way through.
    """
    from prefect_atlas._extras import is_installed

    if demo_database().embedded and not is_installed("pgserver"):
        raise MissingExtraError("pgserver", "embedded", "The demo's embedded PostgreSQL")


@contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step's title, then its duration: long steps show progress."""
    print(f"\n==> {title}", flush=True)
    started = time.perf_counter()
    yield
    print(f"    done in {time.perf_counter() - started:.1f} s", flush=True)


async def run_demo() -> int:
    from prefect_atlas import flows  # late: the flows pull in every part of Atlas

    print(
        "prefect-atlas demo — embedded PostgreSQL, local "
        "vault, alerts to the log, no server to install."
    )
    print("(the first run initialises Prefect's API database and PostgreSQL: about 20-30 s)")

    with step(
        "Saving the demo blocks (Atlas Database, Atlas Vault, Atlas Discord) as 'atlas-demo'"
    ):
        db = demo_database()
        vault = VaultBlock()
        await db.asave(DEMO_BLOCK, overwrite=True)
        await vault.asave(DEMO_BLOCK, overwrite=True)
        await DiscordBlock(env_tag="[demo]").asave(DEMO_BLOCK, overwrite=True)

    with step(
        "Running the ingest flow on the sample batch (12 videos, 3 deliberately bad records)"
    ):
        summary = await flows.ingest(database=DEMO_BLOCK, vault=DEMO_BLOCK, discord=DEMO_BLOCK)
        print(
            f"    {summary.videos} videos of {summary.channels} channels ingested, "
            f"{summary.objects_stored} vault objects, {summary.events_emitted} events, "
            f"{len(summary.rejects)} rejected:"
        )
        for reject in summary.rejects:
            print(f"      - {reject.video_id}: {reject.reason}")

    with step(
        "Running it again with a simulated failure, to "
        "show the failure alert (the traceback is expected)"
    ):
        state = await flows.ingest(
            database=DEMO_BLOCK,
            vault=DEMO_BLOCK,
            discord=DEMO_BLOCK,
            simulate_failure="simulated outage of the transcript service (demo)",
            return_state=True,
        )
        print(
            f"    flow run ended {state.name}; the alert "
            "above went to the log (no webhook configured)."
        )

    with step("Updating the per-channel projection from the event log (new events only)"):
        counts = await flows.replay_projection(database=DEMO_BLOCK)
        for channel, n in counts.items():
            print(f"      {channel}: {n} videos")

    with step("Checking the system"):
        from prefect_atlas.health import acheck_system

        report = await acheck_system(DEMO_BLOCK, DEMO_BLOCK, DEMO_BLOCK)
        print(report.table())

    async with db:
        row = await db.afetch_one("SELECT count(*) FROM atlas.events")
        videos = await db.afetch_one("SELECT count(*) FROM atlas.videos")
    print("\nWhere everything went")
    print("---------------------")
    print(f"  database     {db.describe()}  (database 'atlas', schema 'atlas')")
    print(f"  hot index    {videos[0] if videos else 0} videos in atlas.videos")
    print(f"  event log    {row[0] if row else 0} events in atlas.events")
    print(f"  vault        {vault.describe()}")
    print(
        "  artifacts    'atlas-ingest-summary' and 'atlas-channel-video-counts' (Prefect artifacts)"
    )
    from prefect.settings import PREFECT_HOME

    print(f"  Prefect      {PREFECT_HOME.value()} (ephemeral API, no server)")
    print(
        "\nNext: docs/deployment.md — blocks from your "
        "environment, the UI, deployments.yaml, workers."
    )
    sys.stdout.flush()
    return 0 if report.ok else 1
