"""Notification channels: one module per channel, one registry (name -> class).

To add a channel: a module with a :class:`~notify.channels.base.Channel`
subclass, and one line in ``CHANNELS``.
"""

from __future__ import annotations

from metrics.settings import Settings, SettingsError
from notify.channels.base import Channel, Post, TransportError
from notify.channels.console import ConsoleChannel
from notify.channels.slack import SlackChannel
from notify.options import DeliveryOptions

CHANNELS: dict[str, type[Channel]] = {
    "slack": SlackChannel,
    "console": ConsoleChannel,
}
FALLBACK = "console"


def build_channels(settings: Settings, config: DeliveryOptions) -> dict[str, Channel]:
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


__all__ = ["CHANNELS", "FALLBACK", "Channel", "Post", "TransportError", "build_channels"]
