"""Prefect's own standard checks for every block the package exports."""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

import pytest
from PIL import Image
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites.blocks import BlockStandardTestSuite

import prefect_atlas

BLOCKS = sorted(
    (
        obj
        for obj in vars(prefect_atlas).values()
        if isinstance(obj, type) and issubclass(obj, Block)
    ),
    key=lambda b: b.__name__,
)


def test_package_exports_its_blocks() -> None:
    assert "DatabaseBlock" in {b.__name__ for b in BLOCKS}


@pytest.mark.parametrize("block_cls", BLOCKS, ids=lambda b: b.__name__)
class TestAtlasBlocks(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block_cls: type[Block]) -> type[Block]:
        return block_cls

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Prefect's version downloads `_logo_url`; this machine has no internet, so the
        same checks run on the logo shipped in the package under the URL's file name."""
        assert block._logo_url is not None, f"{block.__name__} has no _logo_url"
        name = PurePosixPath(str(block._logo_url)).name
        shipped = resources.files("prefect_atlas.assets") / name
        assert shipped.is_file(), f"{name} (from _logo_url) is not shipped in prefect_atlas/assets"
        with shipped.open("rb") as fh:
            img = Image.open(fh)
            img.load()
        assert img.width == img.height, "Logo should be a square image"
        assert 1000 > img.width > 45

    def test_block_type_name_is_atlas_branded(self, block: type[Block]) -> None:
        assert block.get_block_type_name().startswith("Atlas ")
