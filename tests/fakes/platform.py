"""Documents as the platform writes them (the data contract's default field names), for tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta


def payment(at: datetime, status: str = "failed", *, amount: int = 1500, currency: str = "usd",
            code: str = "card_declined", email: str = "jane.doe@example.com", specialist: str = "spec-ana",
            service: str = "svc-yoga", **extra) -> dict:
    doc = {"paymentId": f"pi_{uuid.uuid4().hex[:16]}", "amount": amount, "currency": currency, "status": status,
           "customerId": f"cus_{uuid.uuid4().hex[:8]}", "customerEmail": email, "specialistId": specialist,
           "serviceId": service, "createdAt": at, "stripeEventId": f"evt_{uuid.uuid4().hex[:16]}"}
    if status == "failed":
        doc["failureCode"], doc["failureMessage"] = code, "Your card was declined."
    if status in ("completed", "refunded"):
        doc["completedAt"] = at + timedelta(seconds=1)
    doc.update(extra)
    return doc


def webhook_event(received: datetime, status: str = "processed", *, error: str | None = None,
                  kind: str = "payment_intent.succeeded", processing_ms: int = 300) -> dict:
    doc = {"eventId": f"evt_{uuid.uuid4().hex[:16]}", "type": kind, "stripeCreatedAt": received - timedelta(seconds=1),
           "receivedAt": received, "status": status}
    if status in ("processed", "failed"):
        doc["processedAt"] = received + timedelta(milliseconds=processing_ms)
    if error:
        doc["error"] = error
    return doc


def enrollment(created: datetime, customer: str, service: str, status: str = "active") -> dict:
    return {"customerId": customer, "specialistId": "spec-ana", "serviceId": service, "status": status,
            "paymentStatus": "paid" if status == "active" else "pending", "createdAt": created}
