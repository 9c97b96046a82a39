# The two commands a fresh machine needs: `make demo` and `make test`.
#
# Python packages go into a project virtualenv, .venv/, made from $(BASE_PYTHON); nothing is
# installed into the global interpreter. `make test PYTHON=/path/to/python` uses that
# interpreter, and installs into it, instead.
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
# The older Kafka line the integration tests also run against (the newest is pinned in
# devtools/localkafka.py).
COMPAT_KAFKA ?= 3.9.1
# pip runs again only when the package metadata changes; one stamp per interpreter.
STAMPS := .make/$(shell printf '%s' '$(PYTHON)' | cksum | cut -d' ' -f1)
# make test fails a test that skips (e.g. for a missing promtool), unless the broker is an
# external one, which the restart tests cannot stop.
NO_SKIPS := $(if $(KLAG_TEST_BOOTSTRAP),,1)
# The venv is made only when it is the interpreter in use.
MAKE_VENV := $(filter $(VENV)/bin/python,$(PYTHON))

.PHONY: demo test promtool

$(VENV)/bin/python:
	$(BASE_PYTHON) -m venv $(VENV)

$(STAMPS)/run: setup.cfg pyproject.toml | $(MAKE_VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check .
	mkdir -p $(@D) && touch $@

$(STAMPS)/test: setup.cfg pyproject.toml | $(MAKE_VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check ".[test]"
	mkdir -p $(@D) && touch $@

# Debian's prometheus package (it brings promtool), only when promtool is missing, and only as
# root or with sudo; otherwise say what to install.
promtool:
	@command -v promtool >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "promtool not found: install Debian's prometheus package (apt-get install prometheus)" >&2; exit 1; fi; \
	$$sudo apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends prometheus

# A local broker with demo traffic, and the exporter on http://127.0.0.1:8000/metrics
# (plus Prometheus on :9090 when Debian's prometheus is, or can be, installed).
demo: $(STAMPS)/run
	-@$(MAKE) --no-print-directory promtool
	$(PYTHON) -m devtools.localkafka fetch
	$(PYTHON) -m devtools.demo

# The whole suite, starting its own Kafka broker; then the end-to-end tests on the older Kafka.
test: $(STAMPS)/test promtool
	$(PYTHON) -m devtools.localkafka fetch
	$(PYTHON) -m devtools.localkafka fetch --version $(COMPAT_KAFKA)
	KLAG_TEST_NO_SKIPS=$(NO_SKIPS) $(PYTHON) -m pytest
	KLAG_TEST_NO_SKIPS=$(NO_SKIPS) KLAG_TEST_KAFKA_VERSION=$(COMPAT_KAFKA) \
		$(PYTHON) -m pytest tests/test_integration.py tests/test_localkafka.py
