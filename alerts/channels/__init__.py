"""Notification channels: one module per channel, one registry (name -> class).

To add a channel: a module with a :class:`~alerts.channels.base.Channel`
subclass, and one line in ``CHANNELS``.
"""

from __future__ import annotations

from alerts.channels.base import Channel, TransportError
from alerts.channels.console import ConsoleChannel
from alerts.channels.slack import SlackChannel
from alerts.config import AlertsConfig
from metrics.settings import Settings, SettingsError

CHANNELS: dict[str, type[Channel]] = {
    "slack": SlackChannel,
    "console": ConsoleChannel,
}
FALLBACK = "console"


def build_channels(settings: Settings, config: AlertsConfig) -> dict[str, Channel]:
    """The channels alerts go to: ``[alerts] channels`` if set, else every configured
    channel, else the console."""
    if config.channels is not None:
        unknown = [n for n in config.channels if n not in CHANNELS]
        if unknown:
            raise SettingsError(f"configuration error: [alerts] channels: unknown {', '.join(unknown)}; "
                                f"known: {', '.join(CHANNELS)}")
        chosen = {}
        for name in config.channels:
            channel = CHANNELS[name].from_settings(settings, config)
            if channel is None:
                raise SettingsError(f"configuration error: [alerts] channels lists {name}, which is not configured")
            chosen[name] = channel
        return chosen
    chosen = {}
    for name, cls in CHANNELS.items():
        if name == FALLBACK:
            continue
        channel = cls.from_settings(settings, config)
        if channel is not None:
            chosen[name] = channel
    return chosen or {FALLBACK: CHANNELS[FALLBACK].from_settings(settings, config)}


def report_channels(settings: Settings, config: AlertsConfig, failed: str) -> dict[str, Channel]:
    """Where a dead letter is reported: every other alert channel, and always the console."""
    others = {n: c for n, c in build_channels(settings, config).items() if n != failed}
    others.setdefault(FALLBACK, CHANNELS[FALLBACK].from_settings(settings, config))
    return others


__all__ = ["CHANNELS", "Channel", "TransportError", "build_channels", "report_channels"]
