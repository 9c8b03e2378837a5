"""PostgreSQL: the :class:`DatabaseBlock`, its health reports and the schema migrations."""

from prefect_atlas.database.block import DatabaseBlock
from prefect_atlas.database.health import HealthReport, PoolStats
from prefect_atlas.database.migrations import Migration, shipped_migrations

__all__ = ["DatabaseBlock", "HealthReport", "Migration", "PoolStats", "shipped_migrations"]
