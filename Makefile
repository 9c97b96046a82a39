# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps demo test

# Python packages, Debian's prometheus (for promtool) and Apache Kafka's jars (cached).
deps:
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q ".[test]"
	command -v promtool >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }
	$(PYTHON) -m klag_collector.localkafka fetch

# A local broker with demo traffic, and the exporter on http://127.0.0.1:8000/metrics.
demo: deps
	$(PYTHON) -m klag_collector.demo

# The whole suite, starting its own Kafka broker.
test: deps
	$(PYTHON) -m pytest
