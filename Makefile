# Two commands matter: `make dev` (the system on this machine) and `make test`.
# Everything they need is installed into the repository: .venv*/ and .ci/node_modules/.

SHELL := /bin/bash
VENV := .venv
NODE_MODULES := .ci/node_modules
export SAM_CLI_TELEMETRY := 0
# cargo-lambda and zig come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test test-deps lint unit dev

test: test-deps lint unit

test-deps: $(VENV)/.installed $(NODE_MODULES)/.installed

$(VENV)/.installed: .ci/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(NODE_MODULES)/.installed: .ci/package.json .ci/package-lock.json .ci/prism_spec.py
	cd .ci && npm ci --no-audit --no-fund --loglevel=error
	python3 .ci/prism_spec.py $(NODE_MODULES)/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json \
		$(NODE_MODULES)/twilio_api_v2010.prism.json
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

dev:
	@echo "make dev: coming with its own issue"
