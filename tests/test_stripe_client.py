"""The Stripe client: retries, errors that say whether to retry, call records, no key anywhere."""

from __future__ import annotations

import pytest

from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from metrics.embedded import free_port
from metrics.stripe.client import (
    StripeAPI, StripeCallError, StripeNotConfigured, StripeOptions, path_template, redact, stripe_api,
)

FAST = StripeOptions(max_requests_per_second=0, max_network_retries=2, connect_timeout_s=2, read_timeout_s=10)


def api_for(fake, localstripe, **options) -> StripeAPI:
    return StripeAPI(localstripe.api_key, api_base=fake.url, options=StripeOptions(**{**FAST.__dict__, **options}))


def test_a_429_is_retried_with_backoff_until_stripe_answers(stripe_fake, localstripe, shop):
    shop.pay()
    stripe_fake.fail_next("/v1/payment_intents", 429, times=2)
    api = api_for(stripe_fake, localstripe)

    page = api.list_page("payment_intents", {})

    assert len(page.data) == 1
    assert [r.status for r in stripe_fake.calls("/v1/payment_intents")] == [429, 429, 200]
    assert [r.kind for r in api.calls.records] == ["rate_limited", "rate_limited", "ok"]


def test_a_5xx_is_retried_then_reported_as_transient(stripe_fake, localstripe):
    stripe_fake.fail_next("/v1/charges", 503, times=5)
    api = api_for(stripe_fake, localstripe, max_network_retries=1)

    with pytest.raises(StripeCallError) as failure:
        api.list_page("charges", {})

    assert failure.value.permanent is False
    assert failure.value.kind == "server_error"
    assert len(stripe_fake.calls("/v1/charges")) == 2  # the first try and one retry


def test_a_missing_permission_is_permanent_and_says_what_to_grant(stripe_fake, localstripe):
    stripe_fake.fail_next("/v1/disputes", 403)
    api = api_for(stripe_fake, localstripe)

    with pytest.raises(StripeCallError) as failure:
        api.list_page("disputes", {})

    assert failure.value.permanent is True
    assert "grant it read access" in str(failure.value)
    assert len(stripe_fake.calls("/v1/disputes")) == 1  # a 403 is not retried


def test_an_unreachable_server_is_a_transient_network_error(localstripe):
    api = StripeAPI(localstripe.api_key, api_base=f"http://127.0.0.1:{free_port()}",
                    options=StripeOptions(**{**FAST.__dict__, "max_network_retries": 0}))

    with pytest.raises(StripeCallError) as failure:
        api.list_page("events", {})

    assert failure.value.kind == "network_error" and failure.value.permanent is False
    assert [r.kind for r in api.calls.records] == ["network_error"]


def test_every_call_is_sent_with_the_key_and_recorded_with_its_path_template(stripe_fake, localstripe, shop):
    pi = shop.pay()
    api = api_for(stripe_fake, localstripe)

    api.list_page("refunds", {"created": {"gte": pi["created"]}})

    seen = stripe_fake.calls("/v1/refunds")[-1]
    assert seen.authorization == f"Bearer {localstripe.api_key}"
    assert seen.query["created[gte]"] == str(pi["created"])
    record = api.calls.records[-1]
    assert (record.method, record.path, record.status, record.kind) == ("GET", "/v1/refunds", 200, "ok")


def test_path_templates_hide_object_ids():
    assert path_template("https://api.stripe.com/v1/payment_intents/pi_3Abc123?expand[]=x") == "/v1/payment_intents/{id}"
    assert path_template("http://127.0.0.1:9/v1/charges") == "/v1/charges"


def test_redact_masks_the_key_and_anything_shaped_like_a_stripe_key():
    text = redact("bad key sk_live_51Habcdefgh and rk_test_zzzz9999 and whsec_abc123456", "sk_live_51Habcdefgh")
    assert "sk_live_51Habcdefgh" not in text
    assert "rk_test_zzzz9999" not in text
    assert "whsec_abc123456" not in text


def test_without_a_key_the_client_refuses_to_start(settings):
    with pytest.raises(StripeNotConfigured):
        stripe_api(settings)


def test_the_client_repr_never_shows_the_key(stripe_settings, localstripe):
    api = stripe_api(stripe_settings)
    assert localstripe.api_key not in repr(api)
    assert localstripe.api_key not in repr(stripe_settings)


def test_the_fake_refuses_a_parameter_stripe_does_not_take_as_stripe_does(stripe_fake, localstripe):
    api = api_for(stripe_fake, localstripe)

    with pytest.raises(StripeCallError) as unknown:
        api.list_page("charges", {"delivery_success": False})  # an Events parameter, not a Charges one
    with pytest.raises(StripeCallError) as too_many:
        StripeAPI(localstripe.api_key, api_base=stripe_fake.url,
                  options=StripeOptions(**{**FAST.__dict__, "page_size": 101})).list_page("refunds", {})

    assert unknown.value.permanent and unknown.value.status == 400
    assert "delivery_success" in str(unknown.value)
    assert too_many.value.permanent and too_many.value.status == 400


def test_the_fake_lists_newest_first_and_pages_with_starting_after(stripe_fake, localstripe):
    from fakes import stripe_objects as so

    made = [stripe_fake.add("payment_intents", so.payment_intent(created=1_790_000_000 + i)) for i in range(5)]
    api = api_for(stripe_fake, localstripe, page_size=2)

    first = api.list_page("payment_intents", {"created": {"gt": 1_790_000_000}})
    second = api.list_page("payment_intents", {"created": {"gt": 1_790_000_000}, "starting_after": first.data[-1]["id"]})

    assert [p["id"] for p in first.data + second.data] == [p["id"] for p in reversed(made[1:])]
    assert first.has_more and not second.has_more
