"""One typed settings object, read once and checked at start-up.

Sources, highest first: environment variables, ``.streamlit/secrets.toml``
(secrets only), ``paywatch.toml`` (``PAYWATCH_CONFIG``), defaults.  A bad
value or an unknown key stops the program with one line
(:class:`SettingsError`), never a traceback later on.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from typing import Annotated

from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from metrics.schema import Schema, SchemaError

SECRET_NAMES = ("STRIPE_API_KEY", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN")
DEFAULT_SOURCE_DB = "specialistly"


class SettingsError(Exception):
    """A configuration problem, worded for the person starting the program."""


def _env(name: str, *more: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name, *more))


class Settings(BaseSettings):
    """Every setting Paywatch reads; ``docs/configuration.md`` describes each."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=True, frozen=True)

    # Where the platform's data lives.  Unset: the embedded server starts.
    mongodb_uri: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MONGODB_URI", "DATABASE_URL", "mongodb_uri"),
    )
    source_db: str | None = _env("PAYWATCH_SOURCE_DB", "source_db")
    state_db: str = Field(default="paywatch", validation_alias=AliasChoices("PAYWATCH_DB", "state_db"))
    state_uri: SecretStr | None = _env("PAYWATCH_STATE_URI", "state_uri")
    home: Path = Field(default=Path(".paywatch"), validation_alias=AliasChoices("PAYWATCH_HOME", "home"))

    timezone: str = Field(default="UTC", validation_alias=AliasChoices("PAYWATCH_TIMEZONE", "timezone"))
    stuck_minutes: float = Field(default=30, gt=0, validation_alias=AliasChoices("PAYWATCH_STUCK_MINUTES", "stuck_minutes"))
    mask_emails: bool = Field(default=True, validation_alias=AliasChoices("PAYWATCH_MASK_EMAILS", "mask_emails"))
    currencies: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["usd"], validation_alias=AliasChoices("PAYWATCH_CURRENCIES", "currencies"))
    latest_events: int = Field(default=10, ge=1, le=200, validation_alias=AliasChoices("PAYWATCH_LATEST_EVENTS", "latest_events"))

    # Timeouts: a down database must answer "unknown" quickly, not hang.
    server_selection_timeout_ms: int = Field(default=5000, ge=100, validation_alias=AliasChoices("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "server_selection_timeout_ms"))
    query_timeout_ms: int = Field(default=30000, ge=100, validation_alias=AliasChoices("PAYWATCH_QUERY_TIMEOUT_MS", "query_timeout_ms"))

    # Rollups (docs/metrics.md, "Rollups") and how the platform's database is read.
    rollup_change_streams: bool = Field(default=True, validation_alias=AliasChoices("PAYWATCH_ROLLUP_CHANGE_STREAMS", "rollup_change_streams"))
    rollup_trailing_minutes: float = Field(default=120, gt=0, le=7 * 24 * 60, validation_alias=AliasChoices("PAYWATCH_ROLLUP_TRAILING_MINUTES", "rollup_trailing_minutes"))
    read_preference: Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"] = Field(default="primary", validation_alias=AliasChoices("PAYWATCH_READ_PREFERENCE", "read_preference"))

    # Other processes of the product.
    dashboard_url: str = Field(default="http://localhost:8501", validation_alias=AliasChoices("PAYWATCH_DASHBOARD_URL", "dashboard_url"))
    health_url: str | None = _env("PAYWATCH_HEALTH_URL", "health_url")
    eval_interval: float = Field(default=60, gt=0, validation_alias=AliasChoices("PAYWATCH_EVAL_INTERVAL", "eval_interval"))
    heartbeat_url: str | None = _env("PAYWATCH_HEARTBEAT_URL", "heartbeat_url")
    # The worker's /healthz, /readyz and /metrics (alerts/health.py); unset: no server.
    worker_port: int | None = Field(default=None, ge=1, le=65535, validation_alias=AliasChoices("PAYWATCH_WORKER_PORT", "worker_port"))
    worker_address: str = Field(default="127.0.0.1", validation_alias=AliasChoices("PAYWATCH_WORKER_ADDRESS", "worker_address"))

    # Dashboard access when [auth] is set in .streamlit/secrets.toml (comma-separated in the environment).
    auth_allowed_emails: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=AliasChoices("PAYWATCH_AUTH_ALLOWED_EMAILS", "auth_allowed_emails"))
    auth_allowed_domains: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=AliasChoices("PAYWATCH_AUTH_ALLOWED_DOMAINS", "auth_allowed_domains"))

    # The Stripe mirror and reconciliation; unset means StripeOptions' default (metrics/stripe/client.py).
    stripe_sync_minutes: float | None = Field(default=None, gt=0, validation_alias=AliasChoices("PAYWATCH_STRIPE_SYNC_MINUTES", "stripe_sync_minutes"))
    stripe_backfill_days: float | None = Field(default=None, gt=0, validation_alias=AliasChoices("PAYWATCH_STRIPE_BACKFILL_DAYS", "stripe_backfill_days"))
    stripe_max_requests_per_second: float | None = Field(default=None, gt=0, le=100, validation_alias=AliasChoices("PAYWATCH_STRIPE_MAX_REQUESTS_PER_SECOND", "stripe_max_requests_per_second"))
    stripe_connect_timeout_s: float | None = Field(default=None, gt=0, validation_alias=AliasChoices("PAYWATCH_STRIPE_CONNECT_TIMEOUT_S", "stripe_connect_timeout_s"))
    stripe_read_timeout_s: float | None = Field(default=None, gt=0, validation_alias=AliasChoices("PAYWATCH_STRIPE_READ_TIMEOUT_S", "stripe_read_timeout_s"))
    stripe_max_network_retries: int | None = Field(default=None, ge=0, le=10, validation_alias=AliasChoices("PAYWATCH_STRIPE_MAX_NETWORK_RETRIES", "stripe_max_network_retries"))
    reconcile_grace_minutes: float | None = Field(default=None, ge=0, validation_alias=AliasChoices("PAYWATCH_RECONCILE_GRACE_MINUTES", "reconcile_grace_minutes"))

    # Secrets: only from the environment or .streamlit/secrets.toml.
    stripe_api_key: SecretStr | None = _env("STRIPE_API_KEY")
    stripe_api_base: str | None = _env("STRIPE_API_BASE")
    slack_webhook_url: SecretStr | None = _env("SLACK_WEBHOOK_URL")
    slack_bot_token: SecretStr | None = _env("SLACK_BOT_TOKEN")
    slack_channel: str | None = _env("SLACK_CHANNEL")

    # Tables of paywatch.toml, checked by their own modules.
    schema_mapping: dict[str, dict[str, str]] = Field(default_factory=dict, validation_alias=AliasChoices("schema", "schema_mapping"))
    alerts: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("alerts"))
    targets: dict[str, float] = Field(default_factory=dict, validation_alias=AliasChoices("targets"))
    reports: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("reports"))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("currencies", "auth_allowed_emails", "auth_allowed_domains", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("auth_allowed_emails", "auth_allowed_domains")
    @classmethod
    def _lower_list(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().lstrip("@") for v in value if v.strip()]

    @field_validator("currencies")
    @classmethod
    def _lower_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if len(code) != 3 or not code.isalpha():
                raise ValueError(f"not an ISO 4217 currency code: {code!r}")
        return [c.lower() for c in value]

    @field_validator("mongodb_uri", "state_uri")
    @classmethod
    def _mongo_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        uri = value.get_secret_value()
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        if uri.startswith("mongodb://"):  # a mongodb+srv:// URI is only checked when its DNS record is read
            from pymongo.errors import ConfigurationError, InvalidURI
            from pymongo.uri_parser import parse_uri

            try:
                parse_uri(uri)
            except (ConfigurationError, InvalidURI, ValueError) as exc:
                # pymongo's message can quote the URI, password included: name only the kind of error.
                raise ValueError(f"is not a valid MongoDB URI ({type(exc).__name__}): check the host and port, "
                                 "and that the user name and password are percent-encoded") from None
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _StreamlitSecrets(settings_cls), _PaywatchToml(settings_cls))

    # Derived values --------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def schema(self) -> Schema:
        return Schema.from_mapping(self.schema_mapping)

    @property
    def embedded(self) -> bool:
        """True when no MongoDB is configured and the embedded server is used."""
        return self.mongodb_uri is None

    @property
    def source_db_name(self) -> str:
        if self.source_db:
            return self.source_db
        if self.mongodb_uri is not None:
            path = urlsplit(self.mongodb_uri.get_secret_value()).path.lstrip("/")
            if path:
                return path
        return DEFAULT_SOURCE_DB


class _TomlSource(PydanticBaseSettingsSource):
    path: Path | None = None

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            with self.path.open("rb") as fh:
                return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{self.path}: not valid TOML: {exc}") from None

    def get_field_value(self, field, field_name):  # pragma: no cover - required by the base class
        return None, field_name, False


class _PaywatchToml(_TomlSource):
    def __init__(self, settings_cls):
        super().__init__(settings_cls)
        configured = os.environ.get("PAYWATCH_CONFIG")
        self.path = Path(configured) if configured else Path("paywatch.toml")
        if configured and not self.path.is_file():
            raise SettingsError(f"PAYWATCH_CONFIG: no such file: {configured}")

    def __call__(self) -> dict[str, Any]:
        data = self._read()
        for secret in SECRET_NAMES + ("stripe_api_key", "slack_webhook_url", "slack_bot_token"):
            if secret in data:
                raise SettingsError(f"{self.path}: {secret} is a secret; set it in the environment "
                                    f"or .streamlit/secrets.toml, not in a config file")
        return data


class _StreamlitSecrets(_TomlSource):
    """Secrets from Streamlit's secrets file; other tables there (``[auth]``) are Streamlit's."""

    def __init__(self, settings_cls):
        super().__init__(settings_cls)
        self.path = Path(os.environ.get("PAYWATCH_SECRETS_FILE", ".streamlit/secrets.toml"))

    def __call__(self) -> dict[str, Any]:
        data = self._read()
        wanted = SECRET_NAMES + ("STRIPE_API_BASE", "SLACK_CHANNEL", "MONGODB_URI", "DATABASE_URL")
        return {k: v for k, v in data.items() if k in wanted}


def _one_line(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        message = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{where}: {message}")
    return "configuration error: " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Read and check every setting; raise :class:`SettingsError` with one line."""
    try:
        settings = Settings(**overrides)
        settings.schema  # noqa: B018 - validates the [schema] tables now, not at the first query
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    except SchemaError as exc:
        raise SettingsError(f"configuration error: {exc}") from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    return load_settings()
