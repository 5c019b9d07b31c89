"""Slack, through ``slack-sdk``: an incoming webhook (``SLACK_WEBHOOK_URL``) or a
bot token (``SLACK_BOT_TOKEN`` + ``SLACK_CHANNEL``).

Messages are Block Kit: a header with the severity and the rule, the value
against the threshold, window and since when, a sample of what is wrong,
the runbook steps and a link to the dashboard, with a plain-text fallback
for notifications.  Every text is escaped (``&``, ``<``, ``>``), because
Slack reads ``<!channel>`` or ``<https://evil|click>`` anywhere in a text as
markup, and a customer field or a decline message could carry one.

With a bot token, an alert lives in one message, as incident tools do it:

- the firing message is posted with ``chat.postMessage`` and its dedup key in
  the message ``metadata`` (https://docs.slack.dev/messaging/message-metadata);
- reminders are replies in its thread (``thread_ts``);
- the resolve edits it in place (``chat.update``) to show it resolved, and
  says so in the thread; a firing message someone deleted gets a new one;
- a post whose answer never came (a timeout) may be in the channel: before
  any resend the outbox asks :meth:`SlackChannel.find`, which reads
  ``conversations.history`` (or the thread's ``conversations.replies``) with
  ``include_all_metadata`` for the key.  That needs the channel id: a
  ``#name`` is learnt from the first answer of ``chat.postMessage``.

An incoming webhook answers only "ok": it cannot edit, thread or look a post
up, so a webhook post whose answer was lost is sent again (at least once).

slack-sdk's own retry handlers are switched off: the outbox is the one
place that retries, and it honours ``Retry-After``.  slack-sdk logs the
webhook URL with its token on errors and at debug level, so its clients get
a logger that redacts (``metrics.redact``).
"""

from __future__ import annotations

import json
import logging
import re
import socket
from datetime import datetime, timedelta
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from metrics.redact import redact
from metrics.settings import Settings, SettingsError
from notify.channels.base import Channel, Post, TransportError
from notify.message import RESOLVED, RESOLVED_MARK, SEVERITY_MARK, plain_text
from notify.options import DeliveryOptions

# https://docs.slack.dev/reference/block-kit/blocks: limits per element.
HEADER_MAX, SECTION_MAX, FIELD_MAX, FIELDS_MAX, FALLBACK_MAX = 150, 3000, 2000, 10, 4000
# Web API errors that a retry cannot fix (https://docs.slack.dev/reference/methods/chat.postMessage).
PERMANENT_API_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "no_permission", "missing_scope", "invalid_blocks", "msg_too_long",
    "restricted_action", "team_access_not_granted",
}
RETRYABLE_STATUS = {408, 425, 429}
# A chat.update that cannot edit the firing message: post the resolve as a new message instead.
CANNOT_EDIT = {"message_not_found", "cant_update_message", "edit_window_closed", "thread_not_found"}
METADATA_EVENT = "paywatch_notification"
HISTORY_PAGES, HISTORY_PAGE_SIZE = 5, 200
# Slack's clock and ours differ a little: look a little further back than the message's creation.
LOOKBACK_MARGIN = timedelta(minutes=2)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
# What the network and slack-sdk raise for a post that did not complete; anything else is a bug,
# which the outbox counts against outbox_max_attempts.
NETWORK_ERRORS = (URLError, OSError, TimeoutError, SlackClientError, ValueError)


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
    text = f"HTTP {status}: {redact(body, limit=200)}".strip()
    if status == 429:
        retry_after = None
        for name, value in headers.items():
            if name.lower() == "retry-after":
                value = value[0] if isinstance(value, list) else value
                try:
                    retry_after = max(0.0, float(value))
                except (TypeError, ValueError):
                    retry_after = None
        return TransportError(text, retry_after=retry_after, throttled=True)
    if status >= 500 or status in RETRYABLE_STATUS:
        return TransportError(text, maybe_sent=status >= 500)
    # 404 no_service / 410 channel_is_archived: the webhook is gone; 400/403: the payload or token is wrong.
    return TransportError(text, permanent=True)


class _Redacting(logging.Filter):
    """Rewrites slack-sdk's log records without the secrets of every Slack channel made so far."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), secrets=self.secrets, limit=1000), ()
        return True


_sdk_log = logging.getLogger("notify.slack.sdk")
_sdk_log.addFilter(_Redacting())


def check_webhook_url(url: str) -> None:
    """A webhook URL must be http(s) with a host; say so in one line that does not quote it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise SettingsError("configuration error: SLACK_WEBHOOK_URL is not a URL: it must start with "
                            "https:// (e.g. https://hooks.slack.com/services/…; copy it whole from Slack)")


class SlackChannel(Channel):
    name = "slack"

    def __init__(self, *, webhook_url: str | None = None, token: str | None = None, channel: str | None = None,
                 api_base: str | None = None, timeout_s: float = 10.0):
        if not webhook_url and not (token and channel):
            raise ValueError("Slack needs a webhook URL, or a bot token and a channel")
        self.channel = channel
        self._secrets = [s for s in (webhook_url, token) if s]
        _Redacting.secrets.update(self._secrets)
        timeout = max(0.5, float(timeout_s))
        self._team_url: str | None = None
        self._channel_id = channel if channel and CHANNEL_ID.match(channel) else None
        if webhook_url:
            self.webhook = WebhookClient(url=webhook_url, timeout=timeout, retry_handlers=[], logger=_sdk_log)
            self.client = None
        else:
            self.webhook = None
            kwargs = {"base_url": api_base} if api_base else {}
            self.client = WebClient(token=token, timeout=timeout, retry_handlers=[], logger=_sdk_log, **kwargs)
        self.exactly_once = self.client is not None

    @classmethod
    def from_settings(cls, settings: Settings, config: DeliveryOptions) -> "SlackChannel | None":
        timeout = config.send_timeout.total_seconds()
        if settings.slack_webhook_url is not None:
            url = settings.slack_webhook_url.get_secret_value()
            check_webhook_url(url)
            return cls(webhook_url=url, timeout_s=timeout)
        if settings.slack_bot_token is not None:
            if not settings.slack_channel:
                raise SettingsError("configuration error: SLACK_BOT_TOKEN is set but SLACK_CHANNEL is not "
                                    "(the channel to post to, e.g. #payments-alerts or C0123456789)")
            return cls(token=settings.slack_bot_token.get_secret_value(), channel=settings.slack_channel,
                       api_base=config.slack_api_base, timeout_s=timeout)
        return None

    def describe(self) -> str:
        return "slack (incoming webhook)" if self.webhook else f"slack (bot, channel {self.channel})"

    def secrets(self) -> list[str]:
        return list(self._secrets)

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: dict, *, key: str = "", thread: Post | None = None) -> Post | None:
        text, layout = fallback_text(message), blocks(message)
        try:
            if self.webhook is not None:
                response = self.webhook.send(text=text, blocks=layout, unfurl_links=False, unfurl_media=False)
                if response.status_code != 200:
                    raise classify(response.status_code, response.body or "", dict(response.headers or {}))
                return None
            if thread is not None and message["kind"] == RESOLVED and self._edit(thread, text, layout):
                return self._post(text, layout, key, thread)
            if thread is not None and message["kind"] != RESOLVED:
                try:
                    return self._post(text, layout, key, thread)
                except SlackApiError as exc:
                    if _error_of(exc) not in CANNOT_EDIT:
                        raise
            return self._post(text, layout, key, None)
        except TransportError:
            raise
        except SlackApiError as exc:
            raise self._api_error(exc) from None
        except NETWORK_ERRORS as exc:
            raise self._transport_error(exc) from None

    def _post(self, text: str, layout: list[dict], key: str, thread: Post | None) -> Post:
        extra = {"thread_ts": thread.ref["ts"]} if thread is not None else {}
        response = self.client.chat_postMessage(
            channel=thread.ref["channel"] if thread is not None else self.channel, text=text, blocks=layout,
            unfurl_links=False, unfurl_media=False,
            metadata={"event_type": METADATA_EVENT, "event_payload": {"key": key}}, **extra)
        channel, ts = response.get("channel"), response.get("ts")
        self._channel_id = self._channel_id or channel
        return Post({"channel": channel, "ts": ts, **extra}, self._permalink(channel, ts, extra.get("thread_ts")))

    def _edit(self, thread: Post, text: str, layout: list[dict]) -> bool:
        """Show the firing message resolved; False when it is gone (deleted, or too old to edit)."""
        try:
            self.client.chat_update(channel=thread.ref["channel"], ts=thread.ref["ts"], text=text, blocks=layout)
            return True
        except SlackApiError as exc:
            if _error_of(exc) in CANNOT_EDIT:
                return False
            raise

    def _permalink(self, channel: str | None, ts: str | None, thread_ts: str | None = None) -> str | None:
        """``https://<team>.slack.com/archives/<channel>/p<ts>``, the team's URL from ``auth.test`` (once)."""
        if not channel or not ts:
            return None
        if self._team_url is None:
            try:
                self._team_url = self.client.auth_test().get("url") or ""
            except Exception:  # noqa: BLE001 - a link is a convenience; the post went out
                return None
        if not self._team_url:
            return None
        link = f"{self._team_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
        return link + (f"?thread_ts={thread_ts}&cid={channel}" if thread_ts else "")

    # -- looking a post up --------------------------------------------------------------------

    def find(self, key: str, since: datetime, thread: Post | None = None) -> Post | None:
        if self.client is None:
            return None
        channel = thread.ref["channel"] if thread is not None else self._channel_id
        if not channel:
            return None  # a #name never answered yet: nothing to look in (the post is sent again)
        oldest = f"{(since - LOOKBACK_MARGIN).timestamp():.6f}"
        try:
            if thread is not None:
                found = self._search(key, channel, lambda cursor: self.client.conversations_replies(
                    channel=channel, ts=thread.ref["ts"], oldest=oldest, include_all_metadata=True,
                    limit=HISTORY_PAGE_SIZE, cursor=cursor))
                if found is not None:
                    return Post({"channel": channel, "ts": found, "thread_ts": thread.ref["ts"]},
                                self._permalink(channel, found, thread.ref["ts"]))
            found = self._search(key, channel, lambda cursor: self.client.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=HISTORY_PAGE_SIZE, cursor=cursor))
        except SlackApiError as exc:
            raise self._api_error(exc) from None
        except NETWORK_ERRORS as exc:
            raise self._transport_error(exc) from None
        return Post({"channel": channel, "ts": found}, self._permalink(channel, found)) if found else None

    @staticmethod
    def _search(key: str, channel: str, page) -> str | None:
        cursor = None
        for _ in range(HISTORY_PAGES):
            response = page(cursor)
            for item in response.get("messages") or []:
                payload = ((item.get("metadata") or {}).get("event_payload") or {})
                if payload.get("key") == key:
                    return item.get("ts")
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    # -- errors ---------------------------------------------------------------------------------

    def _transport_error(self, exc: Exception) -> TransportError:
        text = f"{type(exc).__name__}: {redact(exc, secrets=self._secrets, limit=200)}"
        if isinstance(exc, json.JSONDecodeError):  # a proxy's HTML page: Slack may be back soon
            return TransportError(text, maybe_sent=True)
        if isinstance(exc, ValueError):  # urllib: "unknown url type", a URL that can never work
            return TransportError(text, permanent=True)
        if isinstance(exc, ConnectionRefusedError) or \
                isinstance(exc, URLError) and isinstance(exc.reason, (ConnectionRefusedError, socket.gaierror)):
            return TransportError(text)  # the request never left
        # A timeout or a reset after the request went out: Slack may have posted it.
        return TransportError(text, maybe_sent=True)

    @staticmethod
    def _api_error(exc: SlackApiError) -> TransportError:
        response = exc.response
        status = getattr(response, "status_code", 200) or 200
        headers = dict(getattr(response, "headers", {}) or {})
        error = _error_of(exc)
        if status != 200:
            return classify(status, error, headers)
        if error == "ratelimited":
            return classify(429, error, headers)
        permanent = error in PERMANENT_API_ERRORS
        return TransportError(f"Slack API error: {redact(error, limit=200)}", permanent=permanent,
                              maybe_sent=not permanent)


def _error_of(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return (data or {}).get("error", "") if isinstance(data, dict) else str(data)[:200]
