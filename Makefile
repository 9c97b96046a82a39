# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
# The older Kafka line the integration tests also run against (the newest is pinned in localkafka.py).
COMPAT_KAFKA ?= 3.9.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps demo test

# Python packages, Debian's prometheus (for promtool) and Apache Kafka's jars (cached).
deps:
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q ".[test]"
	command -v promtool >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }
	$(PYTHON) -m klag_collector.localkafka fetch
	$(PYTHON) -m klag_collector.localkafka fetch --version $(COMPAT_KAFKA)

# A local broker with demo traffic, and the exporter on http://127.0.0.1:8000/metrics.
demo: deps
	$(PYTHON) -m klag_collector.demo

# The whole suite, starting its own Kafka broker; then the end-to-end tests on the older Kafka.
test: deps
	$(PYTHON) -m pytest
	KLAG_TEST_KAFKA_VERSION=$(COMPAT_KAFKA) $(PYTHON) -m pytest tests/test_integration.py tests/test_localkafka.py
