"""A login is trusted only when the identity provider says the email is verified (email_verified true)."""

from __future__ import annotations

import pytest

from test_dashboard import AUTH, env, open_app, opened_cleanly, seeded_name, texts  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


@pytest.mark.parametrize("claims", [{}, {"email_verified": None}, {"email_verified": "true"},
                                    {"email_verified": 1}, {"email_verified": False}],
                         ids=["omitted", "null", "the string true", "the number 1", "false"])
def test_a_login_without_email_verified_true_is_refused(env, claims):
    env.setenv("PAYWATCH_AUTH_ALLOWED_DOMAINS", "example.com")
    at = open_app(secrets=AUTH, user={"is_logged_in": True, "email": "ops@example.com", **claims})
    assert not at.metric
    assert "not verified" in texts(at.error)
    assert [b.label for b in at.button] == ["Log out"]


def test_a_verified_login_on_the_allow_list_sees_the_dashboard(env):
    env.setenv("PAYWATCH_AUTH_ALLOWED_DOMAINS", "example.com")
    at = open_app(secrets=AUTH, user={"is_logged_in": True, "email": "ops@example.com", "email_verified": True})
    assert opened_cleanly(at)
