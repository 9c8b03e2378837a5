"""``settings``: Atlas 0.2.1's configuration object (``atlas.config``) over
:class:`~prefect_atlas.settings.AtlasSettings`, the one settings object of prefect-atlas.

0.2.1 code reads ``settings.DATABASE_URL``, ``settings.VAULT_PROVIDER``,
``settings.COMPLIANCE_MODE`` and ``settings.api_keys``; the upper-case names are the
environment variables, the lower-case ones AtlasSettings' fields, and both work here. The
environment is read (and validated) on first use, not at import.
"""

from __future__ import annotations

from typing import Any

from prefect_atlas.compat import _config
from prefect_atlas.settings import AtlasSettings

Settings = AtlasSettings
"""0.2.1's settings class: prefect-atlas's :class:`AtlasSettings` (same variables)."""


class SettingsProxy:
    """The ``settings`` object: attribute reads go to the process's :class:`AtlasSettings`."""

    def __getattr__(self, name: str) -> Any:
        current = _config.settings()
        field = name.lower()
        if field in AtlasSettings.model_fields or hasattr(AtlasSettings, field):
            return getattr(current, field)
        raise AttributeError(
            f"Atlas settings have no {name!r}; see prefect_atlas.settings.AtlasSettings "
            "(variables such as DATABASE_URL, VAULT_PROVIDER, DISCORD_WEBHOOK_ALERTS)"
        )

    @property
    def api_keys(self) -> list[str]:
        """The YouTube API keys (only the first one in compliance mode), as 0.2.1 gave them."""
        current = _config.settings()
        keys = [k.get_secret_value() for k in current.youtube_api_key_pool_json]
        unique = list(dict.fromkeys(keys))
        return unique[:1] if current.compliance_mode else unique

    def __repr__(self) -> str:
        return "<atlas settings (prefect_atlas.settings.AtlasSettings)>"


settings = SettingsProxy()
