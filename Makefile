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

.PHONY: bench check fuzz fuzz-smoke test test-deps lint unit dev-stack template wire-number-check sim-check sam-build wire-number dev call call-unsigned place-call dev-events alarm enqueue enqueue-check

# The inner loop: no stand-ins, no installs (tests that need moto, Prism or the venv are
# #[ignore]d with the reason). Under two minutes on a warm target/.
check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

# The CI gate. `sam build` (release, LTO: its last minutes keep one core busy) runs beside the
# other checks instead of after them; its output is printed when it is done.
test: test-deps
	@log=$$(mktemp "$${TMPDIR:-/tmp}/sam-build.XXXXXX"); \
	setsid bash -c '$(MAKE) --no-print-directory sam-build; echo $$? >"$$0.rc"' "$$log" >"$$log" 2>&1 & sam=$$!; \
	trap 'kill -- -$$sam 2>/dev/null' INT TERM; \
	$(MAKE) --no-print-directory lint unit dev-stack template wire-number-check sim-check enqueue-check fuzz-smoke; rc=$$?; \
	echo "== waiting for sam-build"; wait $$sam; \
	cat "$$log"; sam_rc=$$(cat "$$log.rc" 2>/dev/null || echo 1); rm -f "$$log" "$$log.rc"; \
	echo "sam-build exit $$sam_rc, other checks exit $$rc"; \
	test "$$rc" -eq 0 && test "$$sam_rc" -eq 0

test-deps: $(VENV)/.installed $(NODE_MODULES)/.installed .venv-iac/.installed .venv-checkov/.installed

$(VENV)/.installed: .ci/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# aws-sam-cli + cfn-lint, and checkov, pin different boto3 versions: a venv each.
.venv-iac/.installed: .ci/requirements-iac.txt
	python3 -m venv .venv-iac
	.venv-iac/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

.venv-checkov/.installed: .ci/requirements-checkov.txt
	python3 -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(NODE_MODULES)/.installed: .ci/package.json .ci/package-lock.json .ci/prism_spec.py
	cd .ci && npm ci --no-audit --no-fund --loglevel=error
	python3 .ci/prism_spec.py $(NODE_MODULES)/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json \
		$(NODE_MODULES)/twilio_api_v2010.prism.json
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every test, those that need the stand-ins too.
unit:
	cargo test --workspace -- --include-ignored

# Fuzzing with cargo-fuzz on the machine's stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the
# flags libFuzzer needs). No sanitizer: the code is safe Rust, so what is hunted is panics.
CARGO_FUZZ := .tools/bin/cargo-fuzz
FUZZ_TARGETS := webhook twiml twiml_inspect outbound_event
FUZZ_SECONDS ?= 300
SMOKE_SECONDS ?= 20

$(CARGO_FUZZ):
	cargo install cargo-fuzz --version 0.13.2 --locked --root .tools

fuzz-smoke: $(CARGO_FUZZ)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(SMOKE_SECONDS)

fuzz: $(CARGO_FUZZ)
	cd fuzz && RUSTC_BOOTSTRAP=1 ../$(CARGO_FUZZ) build --sanitizer none
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; \
		RUSTC_BOOTSTRAP=1 ../$(CARGO_FUZZ) run --sanitizer none $$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | \
			grep -E "^(Done|stat::number_of_executed_units|==|thread|SUMMARY)" | sed "s/^/$$t: /"; \
		test $${PIPESTATUS[0]} -eq 0; \
	done

# Figures, not tests (bench/README.md): cold start, per-webhook CPU, size, memory and outbound
# overhead, beside a hello-world Rust Lambda and the same webhook in Python. Not part of `make test`.
bench: $(VENV)/.installed $(VENV)/.bench-installed
	cargo build --release -p incoming-call -p outbound-call -p bench --bins
	rustup target add aarch64-unknown-linux-gnu
	cargo lambda build --release --arm64 --output-format zip --lambda-dir target/bench-lambda \
		-p incoming-call -p outbound-call
	$(VENV)/bin/python bench/run.py

$(VENV)/.bench-installed: .ci/requirements-bench.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# `make dev` end to end, as a user runs it, on ports of its own.
dev-stack:
	.ci/test_dev.sh

# Every offline check the template can get, then its security-relevant shape as SAM translates it.
template:
	.venv-iac/bin/sam validate --lint --region ap-northeast-1   # runs cfn-lint
	.venv-checkov/bin/checkov -f template.yaml --framework cloudformation --skip-download --quiet --compact
	.venv-iac/bin/python .ci/test_template.py template.yaml

wire-number-check:
	.ci/test_wire_number.sh

# The Twilio voice simulator (.ci/twilio_sim.py), against an app that checks every signature.
sim-check:
	$(VENV)/bin/python .ci/test_twilio_sim.py

# sam build as a user runs it (cargo-lambda + zig from the venv, no Docker): two arm64 bootstraps.
sam-build:
	rustup target add aarch64-unknown-linux-gnu
	.venv-iac/bin/sam build --build-dir target/sam-build
	.venv-iac/bin/python .ci/check_bootstraps.py target/sam-build IncomingCallFunction OutboundCallFunction

# Point a Twilio number at the deployed stack: make wire-number NUMBER=+81501234567
wire-number:
	@test -n "$(NUMBER)" || { echo "usage: make wire-number NUMBER=+81501234567 [STACK=twilio-voice]"; exit 2; }
	.venv-iac/bin/python .ci/wire_number.py --number "$(NUMBER)" --stack-name "$(or $(STACK),twilio-voice)"

dev: test-deps
	.ci/dev/run.sh

# Twilio's part for an incoming call: sign the webhook with the development token and send it.
call:
	@$(VENV)/bin/python .ci/twilio_webhook.py send --token $(DEV_AUTH_TOKEN) \
		--url 'http://127.0.0.1:$(LAMBDA_PORT)/lambda-url/incoming-call/$(ROUTE)' \
		--signed-url 'https://127.0.0.1:$(LAMBDA_PORT)/$(ROUTE)' \
		$(if $(DIGITS),--param Digits=$(DIGITS)) $(foreach p,$(PARAMS),--param $(p))

call-unsigned:
	@$(VENV)/bin/python .ci/twilio_webhook.py send --unsigned --token unused \
		--url 'http://127.0.0.1:$(LAMBDA_PORT)/lambda-url/incoming-call/$(ROUTE)' || true

# The domain events `make dev` published so far (a rule on moto's default bus fills the queue).
SSM_PORT ?= 5055
dev-events:
	@$(VENV)/bin/python .ci/dev/events.py http://127.0.0.1:$(SSM_PORT) dev-events

place-call:
	@$(VENV)/bin/cargo-lambda lambda invoke outbound-call -A 127.0.0.1 -P $(LAMBDA_PORT) --data-file $(EVENT)

# Phone alerts end to end on `make dev DEV_TWILIO=sim`: a CloudWatch alarm entering ALARM goes to
# outbound-call, this plays the bulk-calls queue's event source mapping, and the simulator's
# calls and keypresses are printed until the escalation ends, then its Alert event.
DEV_STATE_DIR ?= $(or $(TMPDIR),/tmp)/twilio-lambda-rs-dev
ALARM_EVENT ?= events/outbound-call-alarm.json
alarm:
	@$(VENV)/bin/python .ci/dev/alarm.py http://127.0.0.1:$(SSM_PORT) http://127.0.0.1:$(LAMBDA_PORT) \
		$(ALARM_EVENT) $(DEV_STATE_DIR)/twilio-sim.log dev-bulk-calls dev-events

# Bulk calls: each line of FILE is one call event, sent to the stack's BulkCallsQueue (or
# QUEUE_URL) ten at a time.
STACK ?= twilio-voice
enqueue:
	@test -n "$(FILE)" || { echo "usage: make enqueue FILE=calls.jsonl [QUEUE_URL=...|STACK=...]"; exit 2; }
	$(VENV)/bin/python .ci/enqueue.py $(if $(QUEUE_URL),--queue-url $(QUEUE_URL),--stack $(STACK)) $(FILE)

enqueue-check:
	$(VENV)/bin/python .ci/test_enqueue.py
