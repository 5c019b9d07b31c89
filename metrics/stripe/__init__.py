"""The Stripe side: a read-only client, a mirror of Stripe's objects in
``PAYWATCH_DB``, Stripe-side metrics read from that mirror, and the
reconciliation of the mirror with the platform's database.

Only the mirror's sync job calls Stripe; every reader (dashboard, alerts,
reports, ``python -m metrics reconcile``) reads the mirror, so a page view
costs no Stripe call.
"""
