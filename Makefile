# Two commands for a newcomer on a fresh Debian machine:
#   make demo   - plant simulator + mock MES + gateway with its OPC-UA server
#   make test   - the whole suite, against real peers (installed here when root)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_DIR := tests/node
# binary:debian-package for the real peers the tests use
PEERS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients influxd:influxdb victoria-metrics:victoria-metrics mbpoll:mbpoll node:nodejs npm:npm socat:socat chromium:chromium chromedriver:chromium-driver
SYSTEM_PKGS := python3-venv python3-dev gcc

.PHONY: demo test venv peers node lint bench soak clean

# make demo INFLUX=http://127.0.0.1:8086 also writes to that InfluxDB 1.x (database "edge")
demo: venv
	$(BIN)/edge-gateway demo $(if $(INFLUX),--influx-url $(INFLUX))

test: venv peers node
	$(BIN)/pytest -q -p no:cacheprovider --durations=25

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || $(MAKE) --no-print-directory _apt PKGS="$(SYSTEM_PKGS)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	@touch $(STAMP)

# Install the Debian peers that are missing (as root), or print the one command that would.
peers:
	@missing=""; for p in $(PEERS); do b=$${p%%:*}; pkg=$${p##*:}; \
	  command -v $$b >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing test peers. Run:  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

_apt:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS) >/dev/null; \
	else echo "Run:  sudo apt-get install -y $(PKGS)"; exit 1; fi

# node-opcua-client, node-opcua (the simulated PLC) and sparkplug-payload: the independent
# peers of the tests (from npm, pinned by package.json and its lock file)
node: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(wildcard $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json)
	@if [ -f $(NODE_DIR)/package.json ]; then \
	  cd $(NODE_DIR) && (if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi) && touch node_modules/.installed; \
	else mkdir -p $(NODE_DIR)/node_modules && touch $(NODE_DIR)/node_modules/.installed; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/journal.py

soak: venv peers node
	EDGE_SOAK=1 $(BIN)/pytest -q -p no:cacheprovider tests/system

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules build *.egg-info
