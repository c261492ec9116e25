#!/usr/bin/env bash
# `make wire-number` against stand-ins: credentials from SSM on moto_server, the number updated
# through Prism serving Twilio's spec (an off-spec request would get 422 and fail the run).
set -uo pipefail
cd "$(dirname "$0")/.."
SSM_PORT=${SSM_PORT:-15155} TWILIO_PORT=${TWILIO_PORT:-14110}
logs=$(mktemp -d)
passed=0 failed=0
check() { local name=$1; shift; if "$@"; then passed=$((passed+1)); echo "ok   $name"; else failed=$((failed+1)); echo "FAIL $name"; fi; }

setsid .venv/bin/moto_server -H 127.0.0.1 -p "$SSM_PORT" >"$logs/moto.log" 2>&1 & moto=$!
setsid .ci/node_modules/.bin/prism mock -h 127.0.0.1 -p "$TWILIO_PORT" .ci/node_modules/twilio_api_v2010.prism.json >"$logs/prism.log" 2>&1 & prism=$!
trap 'kill -TERM -- -$moto -$prism 2>/dev/null; rm -rf "$logs"' EXIT
for _ in $(seq 1 60); do
  curl -sf -o /dev/null "http://127.0.0.1:$SSM_PORT/moto-api/" && curl -s -o /dev/null "http://127.0.0.1:$TWILIO_PORT/" && break
  sleep 1
done
export AWS_ENDPOINT_URL=http://127.0.0.1:$SSM_PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=ap-northeast-1
export TWILIO_API_BASE_URL=http://127.0.0.1:$TWILIO_PORT
.venv/bin/python .ci/dev/seed_ssm.py "$AWS_ENDPOINT_URL" /twilio .ci/dev/call-flow.json >/dev/null

wire() { .venv/bin/python .ci/wire_number.py "$@" 2>&1; }
url=https://abc.lambda-url.ap-northeast-1.on.aws
out=$(wire --number +81501234567 --voice-url "$url/voice" --status-url "$url/status")
check "wires the number through Twilio's published API" grep -q "^PN.*voice_url=" <<<"$out"
check "the update reached the stand-in" grep -q "post /2010-04-01/Accounts/.*/IncomingPhoneNumbers/.*json" "$logs/prism.log"
out=$(wire --number 050-1234-5678 --voice-url "$url/voice")
check "refuses a number that is not E.164" grep -q "must be E.164" <<<"$out"
out=$(wire --number +81501234567 --voice-url "http://insecure.example.com/voice")
check "refuses a plain-http webhook" grep -q "must be https" <<<"$out"
out=$(wire --number +81501234567 --voice-url "$url/voice" --auth-token-parameter /twilio/missing)
check "names a missing SSM parameter" grep -q "not found: /twilio/missing" <<<"$out"
echo "wire-number: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
