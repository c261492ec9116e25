# Two commands matter: `make dev` (the system on this machine) and `make test`.
# Everything they need is installed into the repository: .venv*/ and .ci/node_modules/.

SHELL := /bin/bash
VENV := .venv
NODE_MODULES := .ci/node_modules
export SAM_CLI_TELEMETRY := 0
# cargo-lambda and zig come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

LAMBDA_PORT ?= 9000
# The documented development token (SSM under `make dev`; the events in events/ are signed with it).
DEV_AUTH_TOKEN := 0123456789abcdef0123456789abcdef
ROUTE ?= voice
EVENT ?= events/outbound-call-say-ja.json

.PHONY: test test-deps lint unit dev-stack dev call call-unsigned place-call

test: test-deps lint unit dev-stack

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

# `make dev` end to end, as a user runs it, on ports of its own.
dev-stack:
	.ci/test_dev.sh

dev: test-deps
	.ci/dev/run.sh

# Twilio's part for an incoming call: sign the webhook with the development token and send it.
call:
	@$(VENV)/bin/python .ci/twilio_webhook.py send --token $(DEV_AUTH_TOKEN) \
		--url http://127.0.0.1:$(LAMBDA_PORT)/lambda-url/incoming-call/$(ROUTE) \
		--signed-url https://127.0.0.1:$(LAMBDA_PORT)/$(ROUTE) \
		$(if $(DIGITS),--param Digits=$(DIGITS))

call-unsigned:
	@$(VENV)/bin/python .ci/twilio_webhook.py send --unsigned --token unused \
		--url http://127.0.0.1:$(LAMBDA_PORT)/lambda-url/incoming-call/$(ROUTE) || true

place-call:
	@$(VENV)/bin/cargo-lambda lambda invoke outbound-call -A 127.0.0.1 -P $(LAMBDA_PORT) --data-file $(EVENT)
