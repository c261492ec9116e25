#!/usr/bin/env bash
# End-to-end check of `make dev` as a user runs it: start the stack, play Twilio's part with the
# helpers, place calls, then stop it and make sure nothing it started is left running.
set -uo pipefail
cd "$(dirname "$0")/.."

export SSM_PORT=${SSM_PORT:-15055} TWILIO_PORT=${TWILIO_PORT:-14010} LAMBDA_PORT=${LAMBDA_PORT:-19000}
export DEV_STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/twilio-lambda-rs-devtest.XXXXXX")
out=$DEV_STATE_DIR/make-dev.out
passed=0 failed=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

setsid .ci/dev/run.sh >"$out" 2>&1 &
dev_pid=$!
for _ in $(seq 1 1500); do
  grep -q "^Running" "$out" && break
  kill -0 "$dev_pid" 2>/dev/null || break
  sleep 1
done
check "make dev becomes ready" grep -q "^Running" "$out" || { cat "$out"; }

call() { make --no-print-directory "$@" LAMBDA_PORT="$LAMBDA_PORT" 2>&1; }
r=$(call call);                     check "signed call: 200 + TwiML" grep -q '^HTTP 200 text/xml' <<<"$r"
check "signed call: Japanese greeting" grep -q '<Say language="ja-JP" voice="Polly.Mizuki">お電話ありがとうございます' <<<"$r"
# The menu of the open branch (the branch is part of the signed link, whatever the time now).
r=$(call call ROUTE='menu?at=0o&tries=0' DIGITS=1)
check "menu choice 1 forwards, screened" grep -q '<Dial answerOnBridge="true" timeout="20".*<Number url="https://127.0.0.1:[0-9]*/screen?at=0o1' <<<"$r"
r=$(call call ROUTE='menu?at=0o&tries=0' DIGITS=2)
check "menu choice 2 opens the second level" grep -q 'menu?at=0o2&amp;tries=0' <<<"$r"
r=$(call call ROUTE='screen-result' DIGITS=1)
check "the callee presses 1: connected" grep -q '<Response/>' <<<"$r"
r=$(call call ROUTE='menu?tries=0' DIGITS=1)
check "a link we never built: 400" grep -q '^HTTP 400' <<<"$r"
r=$(call call-unsigned);            check "unsigned call: 403" grep -q '^HTTP 403' <<<"$r"
r=$(.venv/bin/python .ci/twilio_webhook.py send --token 0123456789abcdef0123456789abcdef \
      --url "http://127.0.0.1:$LAMBDA_PORT/lambda-url/incoming-call/voice" \
      --signed-url "https://127.0.0.1:$LAMBDA_PORT/menu" 2>&1)
check "signed for another URL: 403" grep -q '^HTTP 403' <<<"$r"
r=$(.venv/bin/python .ci/twilio_webhook.py send --token not-the-dev-token \
      --url "http://127.0.0.1:$LAMBDA_PORT/lambda-url/incoming-call/voice" \
      --signed-url "https://127.0.0.1:$LAMBDA_PORT/voice" 2>&1)
check "signed with another token: 403" grep -q '^HTTP 403' <<<"$r"
before=$(grep -c "post /2010-04-01/Accounts/.*/Calls.json .*Request received" "$DEV_STATE_DIR/prism.log")
r=$(call place-call);                check "place-call: call SID from the stand-in" grep -q '"call_sid":"CA' <<<"$r"
r=$(call place-call EVENT=events/outbound-call-http-api.json)
check "HTTP API event: 201" grep -q '"statusCode":201' <<<"$r"
printf '{"to": "+449012345678", "say": "x"}' >"$DEV_STATE_DIR/bad.json"
r=$(call place-call EVENT="$DEV_STATE_DIR/bad.json")
check "event outside the allow-list: refused" grep -q 'NonRetryable.InvalidEvent' <<<"$r"
after=$(grep -c "post /2010-04-01/Accounts/.*/Calls.json .*Request received" "$DEV_STATE_DIR/prism.log")
check "exactly one Twilio request per valid event" test "$((after - before))" -eq 2

# The call ledger (DynamoDB on moto): the same request twice dials once, with the same SID.
printf '{"to": "+81312345678", "say": "テスト", "idempotency_key": "dev-once"}' >"$DEV_STATE_DIR/once.json"
first=$(call place-call EVENT="$DEV_STATE_DIR/once.json")
second=$(call place-call EVENT="$DEV_STATE_DIR/once.json")
again=$(grep -c "post /2010-04-01/Accounts/.*/Calls.json .*Request received" "$DEV_STATE_DIR/prism.log")
check "ledger: the same key twice reaches Twilio once" test "$((again - after))" -eq 1
sid() { grep -o '"call_sid":"CA[0-9a-f]*"' <<<"$1"; }
check "ledger: the second delivery gets the first's call SID" test -n "$(sid "$first")" -a "$(sid "$first")" = "$(sid "$second")"
# A status callback → the ledger → Call Completed on EventBridge → the rule's queue.
r=$(call call ROUTE=status PARAMS='CallStatus=no-answer SequenceNumber=3 CallDuration=0')
check "status callback: 204" grep -q '^HTTP 204' <<<"$r"
r=$(make --no-print-directory dev-events SSM_PORT="$SSM_PORT" 2>&1)
check "events: Call Completed published, outcome no-answer" grep -q 'Call Completed.*no-answer' <<<"$r"
# The bulk-calls queue is there for make enqueue.
printf '{"to": "+81312345678", "say": "一斉連絡"}\n' >"$DEV_STATE_DIR/calls.jsonl"
r=$(AWS_ENDPOINT_URL="http://127.0.0.1:$SSM_PORT" AWS_REGION=ap-northeast-1 AWS_ACCESS_KEY_ID=dev \
      AWS_SECRET_ACCESS_KEY=dev make --no-print-directory enqueue FILE="$DEV_STATE_DIR/calls.jsonl" \
      QUEUE_URL="http://127.0.0.1:$SSM_PORT/123456789012/dev-bulk-calls" 2>&1)
check "make enqueue reaches the dev bulk-calls queue" test $? -eq 0

# Stop as Ctrl-C would, then look for anything left behind.
kill -TERM "$dev_pid"
for _ in $(seq 1 30); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
check "make dev exits on a signal" bash -c "! kill -0 $dev_pid 2>/dev/null"
check "make dev reports its stop" grep -q "^stopped." "$out"
strays=$(pgrep -f -- "-p $SSM_PORT|-p $TWILIO_PORT|-P $LAMBDA_PORT|target/debug/(incoming|outbound)-call" || true)
check "no stray processes" test -z "$strays"
for port in "$SSM_PORT" "$TWILIO_PORT" "$LAMBDA_PORT"; do
  check "port $port released" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"
done

# Phone alerts: make dev with the Twilio simulator in Prism's place, and a CloudWatch alarm
# through it (the dev policy: the first contact does not answer, the second presses *, then 1).
out_sim=$DEV_STATE_DIR/make-dev-sim.out
DEV_TWILIO=sim setsid .ci/dev/run.sh >"$out_sim" 2>&1 &
dev_pid=$!
for _ in $(seq 1 600); do
  grep -q "^Running" "$out_sim" && break
  kill -0 "$dev_pid" 2>/dev/null || break
  sleep 1
done
check "make dev DEV_TWILIO=sim becomes ready" grep -q "^Running" "$out_sim"
r=$(timeout 300 make --no-print-directory alarm SSM_PORT="$SSM_PORT" LAMBDA_PORT="$LAMBDA_PORT" \
      DEV_STATE_DIR="$DEV_STATE_DIR" 2>&1)
echo "$r" >"$DEV_STATE_DIR/make-alarm.out"
check "make alarm: the escalation starts" grep -q '"started": true' <<<"$r"
check "make alarm: the first contact does not answer" grep -q 'no-answer' <<<"$r"
check "make alarm: the second presses 1 and hears the confirmation" grep -q '確認を受け付けました' <<<"$r"
check "make alarm: Alert Acknowledged after 2 calls" grep -q 'Alert Acknowledged: .*"calls": 2' <<<"$r"
kill -TERM "$dev_pid"
for _ in $(seq 1 30); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
strays=$(pgrep -f -- "-p $SSM_PORT|--port $TWILIO_PORT|-P $LAMBDA_PORT|target/debug/(incoming|outbound)-call" || true)
check "make dev DEV_TWILIO=sim leaves nothing running" test -z "$strays"

if [ "$failed" -ne 0 ]; then
  echo "--- make dev output"; cat "$out"
  echo "--- make dev DEV_TWILIO=sim output"; cat "$out_sim" 2>/dev/null
  echo "--- make alarm output"; cat "$DEV_STATE_DIR/make-alarm.out" 2>/dev/null
  for log in "$DEV_STATE_DIR"/*.log; do echo "--- $log (tail)"; tail -20 "$log"; done
fi
rm -rf "$DEV_STATE_DIR"
echo "dev-stack: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
