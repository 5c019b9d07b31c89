"""Settings: one typed object; every bad value or unknown key is one clear line (SettingsError)."""

from __future__ import annotations

import pytest

from metrics.settings import SettingsError, load_settings


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    """Write a paywatch.toml and point PAYWATCH_CONFIG at it."""

    def write(text: str):
        path = tmp_path / "paywatch.toml"
        path.write_text(text)
        monkeypatch.setenv("PAYWATCH_CONFIG", str(path))
        return path

    return write


def one_line_error(**overrides) -> str:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_defaults_need_no_configuration():
    settings = load_settings()
    assert (settings.timezone, settings.stuck_minutes, settings.currencies, settings.latest_events) == ("UTC", 30, ["usd"], 10)
    assert settings.embedded and settings.source_db_name == "specialistly"


def test_a_bad_time_zone_is_one_line_naming_the_setting():
    message = one_line_error(timezone="Mars/Olympus_Mons")
    assert "timezone" in message and "Mars/Olympus_Mons" in message


def test_a_bad_time_zone_from_the_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("PAYWATCH_TIMEZONE", "Europe/Atlantis")
    assert "Europe/Atlantis" in one_line_error()


def test_the_time_zone_and_stuck_minutes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PAYWATCH_TIMEZONE", "Asia/Tokyo")
    monkeypatch.setenv("PAYWATCH_STUCK_MINUTES", "45")
    settings = load_settings()
    assert (settings.timezone, settings.tz.key, settings.stuck_minutes) == ("Asia/Tokyo", "Asia/Tokyo", 45)


def test_an_unknown_key_in_paywatch_toml_is_refused(config_file):
    path = config_file('timezone = "Europe/Berlin"\nstuck_minutez = 10\n')
    message = one_line_error()
    assert "stuck_minutez" in message and "unknown setting" in message
    path.write_text('timezone = "Europe/Berlin"\n')
    assert load_settings().timezone == "Europe/Berlin"


def test_the_schema_mapping_is_read_from_schema_tables_in_paywatch_toml(config_file):
    config_file('[schema.payments]\ncollection = "txns"\namount = "amount_cents"\n\n'
                '[schema.webhook_events]\nreceivedAt = "received"\n')
    schema = load_settings().schema
    assert (schema.payments.name, schema.payments["amount"], schema.payments["createdAt"]) == ("txns", "amount_cents", "createdAt")
    assert schema.webhook_events["receivedAt"] == "received"
    assert schema.enrollments.name == "enrollments"


def test_an_unknown_schema_field_is_one_line_naming_it(config_file):
    config_file('[schema.payments]\namonut = "amount_cents"\n')
    message = one_line_error()
    assert "schema.payments" in message and "amonut" in message


def test_an_unknown_schema_collection_is_one_line_naming_it():
    assert "refunds" in one_line_error(schema={"refunds": {"collection": "r"}})


@pytest.mark.parametrize("line", ['STRIPE_API_KEY = "sk_live_abc"', 'slack_webhook_url = "https://hooks.slack.com/x"',
                                  'SLACK_BOT_TOKEN = "xoxb-1"'])
def test_a_secret_in_paywatch_toml_is_refused(config_file, line):
    config_file(line + "\n")
    message = one_line_error()
    assert "secret" in message
    assert "sk_live_abc" not in message and "xoxb-1" not in message  # the value is never echoed


def test_a_missing_config_file_named_by_paywatch_config_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYWATCH_CONFIG", str(tmp_path / "nope.toml"))
    assert "nope.toml" in one_line_error()


def test_a_config_file_that_is_not_toml_is_one_line(config_file):
    config_file("timezone = \n")
    assert "not valid TOML" in one_line_error()


@pytest.mark.parametrize("overrides, named", [
    ({"stuck_minutes": 0}, "stuck_minutes"),
    ({"currencies": ["usd", "dollars"]}, "dollars"),
    ({"latest_events": 0}, "latest_events"),
    ({"mongodb_uri": "postgres://x"}, "mongodb"),
])
def test_a_bad_value_is_one_line_naming_it(overrides, named):
    assert named in one_line_error(**overrides)


def test_currency_codes_are_kept_in_lower_case():
    assert load_settings(currencies=["USD", "Eur", "jpy"]).currencies == ["usd", "eur", "jpy"]


def test_the_source_database_is_named_by_the_uri_path_unless_set():
    uri = "mongodb+srv://user:pass@cluster.example.net/specialistly_prod?retryWrites=true"
    assert load_settings(mongodb_uri=uri).source_db_name == "specialistly_prod"
    assert load_settings(mongodb_uri=uri, source_db="other").source_db_name == "other"
    assert load_settings(mongodb_uri="mongodb://h:27017/").source_db_name == "specialistly"


def test_the_guide_s_database_url_is_accepted(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mongodb://h:27017/from_guide")
    settings = load_settings()
    assert not settings.embedded and settings.source_db_name == "from_guide"


def test_the_database_uri_is_a_secret_that_does_not_print():
    settings = load_settings(mongodb_uri="mongodb://user:hunter2@h:27017/db")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.mongodb_uri)


def test_the_schema_mapping_is_accepted_by_its_field_name_too():
    settings = load_settings(schema_mapping={"payments": {"collection": "txns"}})
    assert settings.schema.payments.name == "txns"


@pytest.mark.parametrize("uri", ["mongodb://user:hunter2@127.0.0.1:notaport/db", "mongodb://us:er:hunter2@h@x/db"])
def test_a_malformed_database_uri_is_one_line_that_keeps_the_password_out(uri):
    with pytest.raises(SettingsError) as caught:
        load_settings(mongodb_uri=uri)
    message = str(caught.value)
    assert "mongodb_uri" in message.lower() and "not a valid MongoDB URI" in message
    assert "hunter2" not in message and "\n" not in message
