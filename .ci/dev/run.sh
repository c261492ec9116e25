#!/usr/bin/env bash
# `make dev`: moto_server (SSM, and the call ledger's DynamoDB table, EventBridge and the
# bulk-calls SQS queue) + Prism (Twilio API, from Twilio's spec) + `cargo lambda watch` running
# both functions against them. Ctrl-C stops everything it started.
# Logs live outside the repository, or `cargo lambda watch` would rebuild on every line.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

SSM_PORT=${SSM_PORT:-5055}
TWILIO_PORT=${TWILIO_PORT:-4010}
LAMBDA_PORT=${LAMBDA_PORT:-9000}
PREFIX=/twilio-lambda-rs/dev
STATE=${DEV_STATE_DIR:-${TMPDIR:-/tmp}/twilio-lambda-rs-dev}
mkdir -p "$STATE"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping: ${pids[*]:-nothing}"
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  echo "stopped."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each service in its own process group, so that stopping it stops its children too.
start() {
  local name=$1; shift
  setsid "$@" >"$STATE/$name.log" 2>&1 &
  pids+=($!)
}

wait_for() {
  local what=$1 seconds=$2; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > seconds )); then
      echo "!! $what is not ready after ${seconds}s; its log: $STATE"
      exit 1
    fi
    sleep 1
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$SSM_PORT" "$TWILIO_PORT" "$LAMBDA_PORT"; do
  port_free "$port" || { echo "!! port $port is in use (another make dev?)"; exit 1; }
done

echo "== SSM: moto_server on 127.0.0.1:$SSM_PORT"
# MOTO_PORT: the alert state machine's tasks call back into the server that runs them.
start moto env MOTO_PORT="$SSM_PORT" "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$SSM_PORT"
wait_for "moto_server" 60 curl -sf "http://127.0.0.1:$SSM_PORT/moto-api/"
curl -sf -X POST -H 'content-type: application/json' -d '{"stepfunctions": {"execute_state_machine": true}}' \
  "http://127.0.0.1:$SSM_PORT/moto-api/config" >/dev/null
"$ROOT/.venv/bin/python" .ci/dev/seed_ssm.py "http://127.0.0.1:$SSM_PORT" "$PREFIX" .ci/dev/call-flow.json
LEDGER_TABLE=twilio-lambda-rs-dev-ledger EVENTS_QUEUE=dev-events BULK_QUEUE=dev-bulk-calls
"$ROOT/.venv/bin/python" .ci/dev/seed_aws.py "http://127.0.0.1:$SSM_PORT" \
  "$LEDGER_TABLE" "$EVENTS_QUEUE" "$BULK_QUEUE"
# Phone alerts: the escalation state machine and the policies (`make alarm`).
ALERT_STATE_MACHINE_ARN=$("$ROOT/.venv/bin/python" .ci/dev/seed_alerts.py "http://127.0.0.1:$SSM_PORT" \
  "$BULK_QUEUE" "$PREFIX/escalation-policies" | tee /dev/stderr | tail -1)

if [[ "${DEV_TWILIO:-prism}" == sim ]]; then
  # The Twilio voice simulator instead of Prism: calls ring scripted phones (the first dev
  # contact does not answer, the second presses * then 1), fetch incoming-call's TwiML through
  # cargo lambda watch, and every webhook is signed with the dev token. `make alarm` prints it.
  echo "== Twilio API: the Twilio voice simulator on 127.0.0.1:$TWILIO_PORT (log: $STATE/twilio-sim.log)"
  TWILIO_INFO="Twilio (simulator)  http://127.0.0.1:$TWILIO_PORT     scripted phones; its calls in $STATE/twilio-sim.log"
  start twilio-sim "$ROOT/.venv/bin/python" -u .ci/twilio_sim.py serve --port "$TWILIO_PORT" \
    --account-sid AC0123456789abcdef0123456789abcdef --time-scale 0.2 \
    --url-map "https://127.0.0.1:$LAMBDA_PORT/=http://127.0.0.1:$LAMBDA_PORT/lambda-url/incoming-call/" \
    --script '+819011110001={"answer": "no-answer"}' --script '+819011110002={"keys": ["*", "1"]}'
  wait_for "the Twilio simulator" 60 curl -s -o /dev/null "http://127.0.0.1:$TWILIO_PORT/"
else
TWILIO_INFO="Twilio API (Prism)  http://127.0.0.1:$TWILIO_PORT     Twilio's published schema; off-spec → 422"
echo "== Twilio API: Prism serving twilio_api_v2010.json on 127.0.0.1:$TWILIO_PORT"
start prism "$ROOT/.ci/node_modules/.bin/prism" mock -h 127.0.0.1 -p "$TWILIO_PORT" \
  "$ROOT/.ci/node_modules/twilio_api_v2010.prism.json"
wait_for "Prism" 120 curl -s -o /dev/null "http://127.0.0.1:$TWILIO_PORT/"
fi

echo "== Lambda: cargo lambda watch on 127.0.0.1:$LAMBDA_PORT (both functions)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$SSM_PORT" AWS_REGION=ap-northeast-1
export AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=dev AWS_EC2_METADATA_DISABLED=true
export TWILIO_ACCOUNT_SID_PARAMETER=$PREFIX/account-sid
export TWILIO_AUTH_TOKEN_PARAMETER=$PREFIX/auth-token
export CALL_FLOW_PARAMETER=$PREFIX/call-flow
export TWILIO_FROM_NUMBER=+15005550006
export ALLOWED_DESTINATION_PREFIXES=+81,+1
export ALLOWED_TWIML_URL_PREFIXES=https://demo.twilio.com/
export TWILIO_API_BASE_URL="http://127.0.0.1:$TWILIO_PORT"
# The call ledger and the events, on the same moto_server (both functions read them).
export CALL_LEDGER_TABLE=$LEDGER_TABLE EVENT_BUS_NAME=default
# A call placed with not_after gets its expiry message here (nothing consumes it locally).
export BULK_CALLS_QUEUE_URL="http://127.0.0.1:$SSM_PORT/123456789012/$BULK_QUEUE"
# Our /status as the signed URL incoming-call sees (Prism never calls back; `make call
# ROUTE=status` plays Twilio's callback).
export STATUS_CALLBACK_URL="https://127.0.0.1:$LAMBDA_PORT/status"
export ALERT_STATE_MACHINE_ARN ESCALATION_POLICIES_PARAMETER=$PREFIX/escalation-policies
export RUST_LOG=${RUST_LOG:-info}
start watch "$ROOT/.venv/bin/cargo-lambda" lambda watch -A 127.0.0.1 -P "$LAMBDA_PORT"

# The functions are built on their first invocation: knock on each until it answers.
echo "   waiting for the first build of both functions (a cold debug build takes a few minutes)..."
webhook="http://127.0.0.1:$LAMBDA_PORT/lambda-url/incoming-call/voice"
wait_for "incoming-call" 1200 bash -c "curl -s -o /dev/null -w '%{http_code}' -X POST '$webhook' | grep -q 403"
echo "   incoming-call is up (an unsigned request got 403)"
wait_for "outbound-call" 600 bash -c "curl -s -X POST -d '{\"to\":\"not-a-number\"}' \
  'http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/outbound-call/invocations' | grep -q InvalidEvent"
echo "   outbound-call is up (an invalid event was refused)"

cat <<INFO

Running (logs in $STATE):
  AWS (moto_server)   http://127.0.0.1:$SSM_PORT     SSM parameters under $PREFIX; DynamoDB table
                      $LEDGER_TABLE; events on the default bus → SQS $EVENTS_QUEUE;
                      bulk calls → SQS $BULK_QUEUE
  $TWILIO_INFO
  incoming-call       $webhook
  outbound-call       cargo lambda invoke outbound-call --data-file events/...

Try, in another terminal:
  make call                        # Twilio's part: a signed incoming call → 200 + TwiML
  make call ROUTE='menu?at=0o&tries=0' DIGITS=3    # a menu choice
  make call-unsigned               # no signature → 403
  make place-call                  # outbound-call with events/outbound-call-say-ja.json → call SID
  make place-call EVENT=events/outbound-call-url.json
  make call ROUTE=status PARAMS='CallStatus=no-answer'   # a status callback → Call Completed
  make dev-events                  # the events published so far (read from $EVENTS_QUEUE)
  make alarm                       # a CloudWatch alarm → phone alert, end to end (needs DEV_TWILIO=sim)
  make enqueue FILE=calls.jsonl QUEUE_URL=http://127.0.0.1:$SSM_PORT/123456789012/$BULK_QUEUE \
    AWS_ENDPOINT_URL=http://127.0.0.1:$SSM_PORT   (nothing consumes it: no event source
    mapping runs locally; the tests play one)

Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
echo "!! a service stopped; see $STATE"
