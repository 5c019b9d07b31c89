"""The ``paywatch`` command: one entry point for every role of the product (see :mod:`paywatch.cli`)."""
