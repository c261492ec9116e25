#!/usr/bin/env python3
"""Signature oracle: twilio-python's RequestValidator judges cases read as JSON from stdin.

Each case: {"url", "token", "params": [[name, value], ...] | null, "body": str | null,
"signature": str | null}. Prints one JSON list: for each case, the signature twilio-python
computes for url + params, and whether it validates the given signature.
"""

import json
import sys

from twilio.request_validator import RequestValidator
from twilio_webhook import MultiDict  # beside this file: repeated names for the validator


out = []
for case in json.load(sys.stdin):
    validator = RequestValidator(case["token"])
    params = case["body"] if case.get("body") is not None else MultiDict([tuple(p) for p in case["params"] or []])
    signature = validator.compute_signature(case["url"], {} if isinstance(params, str) else params)
    valid = bool(case.get("signature") is not None and validator.validate(case["url"], params, case["signature"]))
    out.append({"signature": signature, "valid": valid})
json.dump(out, sys.stdout)
