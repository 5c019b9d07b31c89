"""Docs cannot drift: every setting is described in docs/configuration.md."""

from pathlib import Path

from metrics.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_described_in_the_configuration_doc():
    text = (DOCS / "configuration.md").read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        choices = field.validation_alias.choices if field.validation_alias else [name]
        alias = choices[0]
        # Environment names are upper case; the lower-case ones are paywatch.toml tables.
        wanted = f"`{alias}`" if alias.isupper() else f"`[{alias}"
        if wanted not in text:
            missing.append(f"{name} ({choices[0]})")
    assert not missing, f"settings without a description in docs/configuration.md: {missing}"


def test_readme_shows_the_two_commands():
    readme = (DOCS.parent / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
