"""Slack, through ``slack-sdk``: an incoming webhook (``SLACK_WEBHOOK_URL``) or a
bot token (``SLACK_BOT_TOKEN`` + ``SLACK_CHANNEL``, ``chat.postMessage``).

Messages are Block Kit: a header with the severity and the rule, the value
against the threshold, window and since when, a sample of what is wrong,
the runbook steps and a link to the dashboard, with a plain-text fallback
for notifications.  Every text is escaped (``&``, ``<``, ``>``), because
Slack reads ``<!channel>`` or ``<https://evil|click>`` anywhere in a text as
markup, and a customer field or a decline message could carry one.

slack-sdk's own retry handlers are switched off: the outbox is the one
place that retries, and it honours ``Retry-After``.
"""

from __future__ import annotations

import json
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from alerts.channels.base import Channel, TransportError
from alerts.config import AlertsConfig
from alerts.messages import RESOLVED, RESOLVED_MARK, SEVERITY_MARK, plain_text
from metrics.settings import Settings, SettingsError

# https://docs.slack.dev/reference/block-kit/blocks: limits per element.
HEADER_MAX, SECTION_MAX, FIELD_MAX, FIELDS_MAX, FALLBACK_MAX = 150, 3000, 2000, 10, 4000
# Web API errors that a retry cannot fix (https://docs.slack.dev/reference/methods/chat.postMessage).
PERMANENT_API_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "no_permission", "missing_scope", "invalid_blocks", "msg_too_long",
    "restricted_action", "team_access_not_granted",
}
RETRYABLE_STATUS = {408, 425, 429}


def escape(text: object) -> str:
    """Slack's three control characters as entities (https://docs.slack.dev/messaging/formatting-message-text#escaping)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(url: str, label: str) -> str:
    # Inside <url|label> only the label's control characters need escaping; the URL is ours.
    return f"<{escape(url)}|{escape(label)}>"


def blocks(message: dict) -> list[dict]:
    """The Block Kit layout of a message; every text from ``message`` escaped."""
    resolved = message["kind"] == RESOLVED
    mark = RESOLVED_MARK if resolved else SEVERITY_MARK.get(message["severity"], "")
    label = "RESOLVED" if resolved else message["severity"].upper()
    out: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _cut(f"{mark} {label} · {escape(message['title'])}", HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(message["headline"]), SECTION_MAX)}},
    ]
    fields = [{"type": "mrkdwn", "text": _cut(f"*{escape(k)}*\n{escape(v)}", FIELD_MAX)}
              for k, v in message.get("fields", [])[:FIELDS_MAX]]
    if fields:
        out.append({"type": "section", "fields": fields})
    if message.get("details"):
        text = "*What is wrong*\n" + "\n".join(f"• {escape(line)}" for line in message["details"])
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}})
    runbook = message.get("runbook") or {}
    if runbook.get("steps"):
        title = f"*Runbook* — {escape(runbook['section'])}" if runbook.get("section") else "*Runbook*"
        steps = "\n".join(f"{i}. {escape(step)}" for i, step in enumerate(runbook["steps"], 1))
        if runbook.get("url"):
            steps += "\n" + _link(runbook["url"], runbook["url"])
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{title}\n{steps}", SECTION_MAX)}})
    out.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"{_link(message['link'], 'Open in the Paywatch dashboard')} · {escape(message['at'])}"},
    ]})
    return out


def fallback_text(message: dict) -> str:
    """The notification text (and what clients without Block Kit show), escaped like the blocks."""
    return _cut(escape(plain_text(message)), FALLBACK_MAX)


def classify(status: int, body: str, headers: dict) -> TransportError:
    """An HTTP answer other than 200 as a retryable or permanent error."""
    text = f"HTTP {status}: {body[:200]}".strip()
    if status == 429:
        retry_after = None
        for name, value in headers.items():
            if name.lower() == "retry-after":
                value = value[0] if isinstance(value, list) else value
                try:
                    retry_after = max(0.0, float(value))
                except (TypeError, ValueError):
                    retry_after = None
        return TransportError(text, retry_after=retry_after)
    if status >= 500 or status in RETRYABLE_STATUS:
        return TransportError(text)
    # 404 no_service / 410 channel_is_archived: the webhook is gone; 400/403: the payload or token is wrong.
    return TransportError(text, permanent=True)


class SlackChannel(Channel):
    name = "slack"

    def __init__(self, *, webhook_url: str | None = None, token: str | None = None, channel: str | None = None,
                 api_base: str | None = None, timeout_s: float = 10.0):
        if not webhook_url and not (token and channel):
            raise ValueError("Slack needs a webhook URL, or a bot token and a channel")
        self.channel = channel
        timeout = max(1, int(round(timeout_s)))
        if webhook_url:
            self.webhook = WebhookClient(url=webhook_url, timeout=timeout, retry_handlers=[])
            self.client = None
        else:
            self.webhook = None
            kwargs = {"base_url": api_base} if api_base else {}
            self.client = WebClient(token=token, timeout=timeout, retry_handlers=[], **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, config: AlertsConfig) -> "SlackChannel | None":
        timeout = config.send_timeout.total_seconds()
        if settings.slack_webhook_url is not None:
            return cls(webhook_url=settings.slack_webhook_url.get_secret_value(), timeout_s=timeout)
        if settings.slack_bot_token is not None:
            if not settings.slack_channel:
                raise SettingsError("configuration error: SLACK_BOT_TOKEN is set but SLACK_CHANNEL is not "
                                    "(the channel to post to, e.g. #payments-alerts or C0123456789)")
            return cls(token=settings.slack_bot_token.get_secret_value(), channel=settings.slack_channel,
                       api_base=config.slack_api_base, timeout_s=timeout)
        return None

    def describe(self) -> str:
        return "slack (incoming webhook)" if self.webhook else f"slack (bot, channel {self.channel})"

    def send(self, message: dict) -> None:
        text, layout = fallback_text(message), blocks(message)
        try:
            if self.webhook is not None:
                response = self.webhook.send(text=text, blocks=layout, unfurl_links=False, unfurl_media=False)
                if response.status_code != 200:
                    raise classify(response.status_code, response.body or "", dict(response.headers or {}))
                return
            self.client.chat_postMessage(channel=self.channel, text=text, blocks=layout,
                                         unfurl_links=False, unfurl_media=False)
        except TransportError:
            raise
        except SlackApiError as exc:
            raise self._api_error(exc) from None
        except (URLError, OSError, TimeoutError, SlackClientError, json.JSONDecodeError, ValueError) as exc:
            # Connection refused, reset, timed out, or a proxy's HTML page: Slack may be back soon.
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    @staticmethod
    def _api_error(exc: SlackApiError) -> TransportError:
        response = exc.response
        status = getattr(response, "status_code", 200) or 200
        headers = dict(getattr(response, "headers", {}) or {})
        error = (response.data or {}).get("error", "") if isinstance(response.data, dict) else str(response.data)[:200]
        if status != 200:
            return classify(status, error, headers)
        if error == "ratelimited":
            return classify(429, error, headers)
        return TransportError(f"Slack API error: {error}", permanent=error in PERMANENT_API_ERRORS)
