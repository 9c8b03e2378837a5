"""Where an alert goes (``Channel``) and how loud it is (``AlertLevel``).

Atlas has one Discord channel per audience: operators read ``alerts``, analysts ``hunt`` and
``surveillance``, and routine job chatter goes to ``ops``. A level picks the embed colour so a
red bar is recognisable in a busy channel before anyone reads the text.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """A Discord channel of Atlas; each maps to one webhook field of ``DiscordBlock``."""

    ALERTS = "alerts"
    HUNT = "hunt"
    SURVEILLANCE = "surveillance"
    OPS = "ops"


class AlertLevel(StrEnum):
    """Severity of an alert; ``colour`` is the embed's side-bar colour (RGB integer)."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def colour(self) -> int:
        return _COLOURS[self]


_COLOURS: dict[AlertLevel, int] = {
    AlertLevel.INFO: 0x3498DB,  # blue
    AlertLevel.SUCCESS: 0x2ECC71,  # green
    AlertLevel.WARNING: 0xF1C40F,  # yellow
    AlertLevel.CRITICAL: 0xE74C3C,  # red
}
