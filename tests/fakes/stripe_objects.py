"""Stripe objects in the shapes Stripe sends them, for the fake to serve.

Every builder returns an object modelled on Stripe's own API fixtures
(``openapi/fixtures3.json`` in the public ``stripe/openapi`` repository): the
same field names and nesting (``billing_details.email``, ``evidence_details.due_by``,
``request.idempotency_key``...), optional fields ``null`` as Stripe sends
them, and most of the fields the mirror does not read, so it is tested
against what it will really receive, not against the few fields it uses.
Large sub-objects nothing here reads (card checks, 3-D Secure details, the
full evidence form) are trimmed.  The status enums are those of the
pinned API version (stripe-python 16.1.0's generated types say the same):

* Refund ``status``: ``pending``, ``requires_action``, ``succeeded``, ``failed``, ``canceled``;
* Dispute ``status``: ``warning_needs_response``, ``warning_under_review``,
  ``warning_closed``, ``needs_response``, ``under_review``,
  ``appeal_needs_response``, ``appeal_under_review``, ``won``, ``lost``, ``prevented``.

:func:`legacy_payment_intent` is a PaymentIntent as an event rendered in an
API version before 2022-11-15 carries it: a ``charges`` list and no
``latest_charge``.
"""

from __future__ import annotations

import random
import string
import time

API_VERSION = "2026-10-28.endive"
LEGACY_API_VERSION = "2020-08-27"

REFUND_STATUSES = ("pending", "requires_action", "succeeded", "failed", "canceled")
DISPUTE_STATUSES = ("warning_needs_response", "warning_under_review", "warning_closed", "needs_response",
                    "under_review", "appeal_needs_response", "appeal_under_review", "won", "lost", "prevented")


def new_id(prefix: str) -> str:
    return prefix + "1" + "".join(random.choices(string.ascii_letters + string.digits, k=23))


def _now() -> int:
    return int(time.time())


def payment_intent(*, amount: int = 4900, currency: str = "usd", status: str = "succeeded",
                   created: int | None = None, customer: str | None = "cus_Qx1a2b3c4d5e6f",
                   latest_charge: str | None = None, receipt_email: str | None = None,
                   last_payment_error: dict | None = None, metadata: dict | None = None, id: str | None = None) -> dict:
    pid = id or new_id("pi_")
    return {
        "id": pid, "object": "payment_intent", "amount": amount,
        "amount_capturable": 0, "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0, "application": None,
        "application_fee_amount": None, "automatic_payment_methods": {"enabled": True}, "canceled_at": None,
        "cancellation_reason": None, "capture_method": "automatic", "client_secret": f"{pid}_secret_x",
        "confirmation_method": "automatic", "created": created or _now(), "currency": currency,
        "customer": customer, "description": None, "last_payment_error": last_payment_error,
        "latest_charge": latest_charge, "livemode": False, "metadata": metadata or {},
        "next_action": None, "on_behalf_of": None, "payment_method": "pm_1PgafyB7WZ01zgkWxyz",
        "payment_method_configuration_details": None, "payment_method_options": {},
        "payment_method_types": ["card"], "processing": None, "receipt_email": receipt_email, "review": None,
        "setup_future_usage": None, "shipping": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": status, "transfer_data": None, "transfer_group": None,
        "source": None, "excluded_payment_method_types": None, "customer_account": None,
    }


def charge(pi: dict, *, status: str = "succeeded", created: int | None = None, email: str | None = None,
           amount_refunded: int = 0, id: str | None = None) -> dict:
    cid = id or new_id("ch_")
    return {
        "id": cid, "object": "charge", "amount": pi["amount"], "amount_captured": pi["amount"] if status == "succeeded" else 0,
        "amount_refunded": amount_refunded, "application": None, "application_fee": None,
        "application_fee_amount": None, "balance_transaction": new_id("txn_"),
        "billing_details": {"address": {"city": None, "country": None, "line1": None, "line2": None,
                                        "postal_code": None, "state": None},
                            "email": email, "name": "Jenny Rosen", "phone": None, "tax_id": None},
        "calculated_statement_descriptor": None, "captured": status == "succeeded",
        "created": created or pi["created"], "currency": pi["currency"], "customer": pi.get("customer"),
        "description": None, "disputed": False, "failure_balance_transaction": None,
        "failure_code": None, "failure_message": None, "fraud_details": {}, "livemode": False, "metadata": {},
        "on_behalf_of": None,
        "outcome": {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                    "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": status == "succeeded", "payment_intent": pi["id"], "payment_method": "pm_1PgafyB7WZ01zgkWxyz",
        "payment_method_details": {"card": {"brand": "visa", "country": "US", "exp_month": 8, "exp_year": 2030,
                                            "fingerprint": "AOB934RVNwzk6xtn", "funding": "credit", "last4": "4242"},
                                   "type": "card"},
        "receipt_email": None, "receipt_number": None, "receipt_url": None,
        "refunded": amount_refunded >= pi["amount"], "refunds": {"data": [], "has_more": False, "object": "list",
                                                                "url": f"/v1/charges/{cid}/refunds"},
        "review": None, "shipping": None, "source_transfer": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": status, "transfer_data": None, "transfer_group": None,
    }


def refund(*, charge_id: str, amount: int, currency: str = "usd", status: str = "succeeded",
           payment_intent: str | None = None, created: int | None = None, failure_reason: str | None = None,
           id: str | None = None) -> dict:
    """A refund; an account on an older API version may send it with only its ``charge``."""
    assert status in REFUND_STATUSES, status
    out = {
        "id": id or new_id("re_"), "object": "refund", "amount": amount, "balance_transaction": None,
        "charge": charge_id, "created": created or _now(), "currency": currency,
        "destination_details": {"card": {"type": "refund"}, "type": "card"}, "metadata": {},
        "payment_intent": payment_intent, "reason": "requested_by_customer", "receipt_number": None,
        "source_transfer_reversal": None, "status": status, "transfer_reversal": None,
    }
    if status == "failed":
        out["failure_reason"] = failure_reason or "expired_or_canceled_card"
        out["failure_balance_transaction"] = new_id("txn_")
    if status == "requires_action":
        out["next_action"] = {"type": "display_details", "display_details": {"expires_at": out["created"] + 7 * 86400}}
    return out


def dispute(ch: dict, *, status: str = "needs_response", reason: str = "fraudulent", created: int | None = None,
            id: str | None = None) -> dict:
    assert status in DISPUTE_STATUSES, status
    created = created or _now()
    return {
        "id": id or new_id("dp_"), "object": "dispute", "amount": ch["amount"], "balance_transactions": [],
        "charge": ch["id"], "created": created, "currency": ch["currency"],
        "evidence": {"customer_email_address": None, "customer_name": None, "product_description": None,
                     "receipt": None, "service_date": None, "uncategorized_text": None},
        "evidence_details": {"due_by": created + 7 * 86400, "has_evidence": False, "past_due": False,
                             "submission_count": 0, "enhanced_eligibility": {}},
        "is_charge_refundable": False, "livemode": False, "metadata": {}, "payment_intent": ch.get("payment_intent"),
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
                                   "type": "card"},
        "reason": reason, "status": status, "enhanced_eligibility_types": [],
    }


def event(event_type: str, obj: dict, *, created: int | None = None, pending_webhooks: int = 0,
          api_version: str = API_VERSION, id: str | None = None) -> dict:
    return {
        "id": id or new_id("evt_"), "object": "event", "api_version": api_version, "created": created or _now(),
        "data": {"object": dict(obj)}, "livemode": False, "pending_webhooks": pending_webhooks,
        "request": {"id": None, "idempotency_key": None}, "type": event_type,
    }


def webhook_endpoint(url: str, enabled_events: list[str], *, status: str = "enabled", created: int | None = None,
                     id: str | None = None) -> dict:
    return {
        "id": id or new_id("we_"), "object": "webhook_endpoint", "api_version": None, "application": None,
        "created": created or _now(), "description": None, "enabled_events": list(enabled_events),
        "livemode": False, "metadata": {}, "status": status, "url": url,
    }


def legacy_payment_intent(pi: dict, charges: list[dict]) -> dict:
    """``pi`` as an event in an API version before 2022-11-15 renders it: ``charges``, no ``latest_charge``."""
    out = {k: v for k, v in pi.items() if k != "latest_charge"}
    out["charges"] = {"object": "list", "data": sorted(charges, key=lambda c: c["created"], reverse=True),
                      "has_more": False, "total_count": len(charges), "url": f"/v1/charges?payment_intent={pi['id']}"}
    return out
