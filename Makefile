# Paywatch: two commands for a new machine.
#   make run    set up, then start the product on the embedded default
#   make test   set up, then run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench screenshots setup browser clean help image-test

help:
	@echo "make run    start Paywatch (embedded database, demo data, dashboard, alert worker)"
	@echo "make test   run the whole test suite (installs what it needs first)"
	@echo "make bench  seed the reference volume, build its rollups and measure (docs/performance.md)"
	@echo "make screenshots  refresh docs/screenshots/ from the browser test"
	@echo "make image-test   build the container image and run the dashboard and the worker from it (docs/deploy.md)"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the browser tests: Debian's package, installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(PY) -m demo.launch

test: setup browser
	$(PY) -m pytest -q

# The figures with rollups (docs/performance.md sections 5 and 6); `python -m bench --help` for the others.
bench: setup
	$(PY) -m bench rollups
	$(PY) -m bench load

# The browser test saves a screenshot of every page; here into docs/ instead of a temporary folder.
screenshots: setup browser
	PAYWATCH_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_dashboard_browser.py

# Build the image with Podman (offline: a local base and a host wheelhouse) and run both roles from it.
image-test: setup
	PYTHONPATH=$(CURDIR) $(PY) deploy/image_test.py

clean:
	rm -rf $(VENV) .paywatch .pytest_cache
