"""The embedded default's demo: a simulated course-enrollment platform.

``demo.seed`` writes 90 days of history (with incidents at known times),
``demo.traffic`` keeps writing new payments so the numbers move, and
``python -m demo`` runs both against the embedded database.

The demo plays the *platform*: it is the only code in this project that writes
to the platform's collections.  Paywatch itself only reads them.
"""
