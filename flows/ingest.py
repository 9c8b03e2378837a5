"""Deployment entrypoint of the ingest pipeline (``deployments.yaml``: ``flows/ingest.py:ingest``).

The pipeline's code is ``prefect_atlas/flows/ingest.py``: copy that module to build your own.
Run it here with ``python flows/ingest.py`` (ephemeral Prefect, blocks named "default").
"""

import asyncio

from prefect_atlas.flows.ingest import ingest

__all__ = ["ingest"]

if __name__ == "__main__":
    print(asyncio.run(ingest()).markdown())
