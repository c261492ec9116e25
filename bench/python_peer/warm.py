"""Warm per-webhook CPU of the Python peer: the same three figures criterion measures for ours
(whole handler, signature check, TwiML render), as medians of timeit repeats, in µs.
usage: warm.py EVENT_JSON (with the environment app.py needs: SSM on moto)."""

import base64
import json
import statistics
import sys
import timeit
from urllib.parse import parse_qsl

import app

event = json.load(open(sys.argv[1], encoding="utf-8"))
body = base64.b64decode(event["body"]).decode() if event.get("isBase64Encoded") else event["body"]
base = "https://" + event["headers"]["host"]
url = base + event["rawPath"]
params = dict(parse_qsl(body, keep_blank_values=True))
signature = event["headers"]["x-twilio-signature"]

answer = app.handler(event, None)
assert answer["statusCode"] == 200, answer
assert app.validator.validate(url, params, signature)


def per_call_us(fn):
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=15, number=number)
    return statistics.median(runs) / number * 1e6


print(json.dumps({
    "handler": per_call_us(lambda: app.handler(event, None)),
    "validate": per_call_us(lambda: app.validator.validate(url, params, signature)),
    "render": per_call_us(lambda: app.answer(base)),
    "twiml": answer["body"],
}))
