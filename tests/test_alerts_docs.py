"""docs/alerts.md cannot drift: every default rule, every [alerts] setting and every CLI command is in it,
and the help it quotes is the CLI's help as it is now."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from alerts.__main__ import _parser
from alerts.config import AlertsConfig
from alerts.rules import default_rules
from metrics.settings import load_settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
HELP_COLUMNS = "100"  # the width the quoted help was printed at (COLUMNS=100 python -m alerts ... --help)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_default_rule_is_documented():
    alerts_doc = (DOCS / "alerts.md").read_text()
    stripe_doc = (DOCS / "stripe.md").read_text() if (DOCS / "stripe.md").exists() else ""
    missing = [rule.id for rule in default_rules(load_settings())
               if f"`{rule.id}`" not in alerts_doc
               and not (rule.id.startswith("stripe_") and f"`{rule.id}`" in stripe_doc)]
    assert not missing, f"default rules missing from docs/alerts.md: {missing}"


def test_every_alerts_setting_is_documented():
    text = (DOCS / "alerts.md").read_text()
    missing = [name for name in AlertsConfig.model_fields if f"`{name}`" not in text]
    assert not missing, f"[alerts] settings missing from docs/alerts.md: {missing}"


def test_every_cli_command_and_option_is_documented():
    text = (DOCS / "alerts.md").read_text()
    for name, parser in subcommands().items():
        assert f"python -m alerts {name}" in text, name
        for action in parser._actions:
            for option in action.option_strings:
                assert option in text, f"{name} {option}"


def _quoted_help(text: str) -> dict[str, str]:
    """The ``$ python -m alerts X --help`` blocks of the doc, by command ('' for the top level)."""
    blocks = re.split(r"^\$ python -m alerts ?(\S*) ?--help\n", text, flags=re.M)
    return {blocks[i]: blocks[i + 1].split("```")[0].rstrip("\n") for i in range(1, len(blocks), 2)}


def test_the_quoted_help_is_the_clis_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)  # argparse wraps at the terminal width
    quoted = _quoted_help((DOCS / "alerts.md").read_text())
    expected = {"": _parser().format_help(), **{n: p.format_help() for n, p in subcommands().items()}}
    assert set(quoted) == set(expected)
    for name, help_text in expected.items():
        assert quoted[name] == help_text.rstrip("\n"), f"re-copy: COLUMNS={HELP_COLUMNS} python -m alerts {name} --help"


@pytest.mark.parametrize("words", ["chat:write", "files:write", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN",
                                   "SLACK_CHANNEL", "Retry-After", "dedup key", "PAYWATCH_HEARTBEAT_URL",
                                   "keep_firing_for", "paywatch.toml"])
def test_the_doc_covers_slack_delivery_and_configuration(words):
    assert words in (DOCS / "alerts.md").read_text()
