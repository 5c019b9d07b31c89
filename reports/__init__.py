"""The weekly (and monthly) review as a file: built once from ``metrics/`` into
one data model (:mod:`reports.model`), rendered as HTML, XLSX and a zip of CSVs."""
