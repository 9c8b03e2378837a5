"""A cached flow on a vault result store, run by the tests in-process and in a second process.

``python -m tests.vault._result_flow BLOCK_NAME COUNTER X [X ...]`` runs the sync flow (so
Prefect uses the block's sync faces, ``read_path(..., _sync=True)``) and prints the results
as JSON, with the block as a string reference; the tests call :func:`arun` in-process (the
async faces, the loaded block passed itself). Every execution of the
task's body appends one line to the file ``COUNTER``: a cached call appends nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import INPUTS

from prefect_atlas import VaultBlock


def _record(counter: str, x: int) -> int:
    with Path(counter).open("a") as fh:
        fh.write(f"{x}\n")
    return x * x


@task(cache_policy=INPUTS, persist_result=True)
def square(counter: str, x: int) -> int:
    return _record(counter, x)


@task(cache_policy=INPUTS, persist_result=True)
async def asquare(counter: str, x: int) -> int:
    return _record(counter, x)


@flow
def squares(storage: str, counter: str, xs: list[int]) -> list[int]:
    cached = square.with_options(result_storage=storage)
    return [cached(counter, x) for x in xs]


@flow
async def asquares(block_name: str, counter: str, xs: list[int]) -> list[int]:
    cached = asquare.with_options(result_storage=await VaultBlock.aload(block_name))
    return [await cached(counter, x) for x in xs]


def storage_ref(block_name: str) -> str:
    """The string reference Prefect resolves to the saved vault block."""
    return f"atlas-vault/{block_name}"


async def arun(block_name: str, counter: str, xs: list[int]) -> list[int]:
    """The async flow, given the loaded block itself (the sync one gets a string reference)."""
    block = await VaultBlock.aload(block_name)
    flow_with_storage = asquares.with_options(result_storage=block)
    return await flow_with_storage(block_name, counter, xs)


def main(argv: list[str]) -> None:
    block_name, counter, *xs = argv
    flow_with_storage = squares.with_options(result_storage=storage_ref(block_name))
    print(json.dumps(flow_with_storage(storage_ref(block_name), counter, [int(x) for x in xs])))


if __name__ == "__main__":
    main(sys.argv[1:])
