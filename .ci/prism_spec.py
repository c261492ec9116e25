#!/usr/bin/env python3
"""Writes the Twilio API spec Prism serves: Twilio's own document, with one thing made explicit.

OpenAPI's default encoding for an array property of a form body is style=form, explode=true
(repeated names: StatusCallbackEvent=initiated&StatusCallbackEvent=ringing). Prism only
deserializes a form field into an array when that encoding is written out, and otherwise refuses
every StatusCallbackEvent with 422 "must be array". Writing the default out changes nothing in
the contract; everything else in the document is left as Twilio published it.

usage: prism_spec.py SOURCE.json DEST.json
"""

import json
import sys

source, dest = sys.argv[1], sys.argv[2]
with open(source) as f:
    spec = json.load(f)

added = 0
for item in spec.get("paths", {}).values():
    for operation in item.values():
        if not isinstance(operation, dict):
            continue
        content = operation.get("requestBody", {}).get("content", {})
        form = content.get("application/x-www-form-urlencoded")
        if not form:
            continue
        encoding = form.setdefault("encoding", {})
        for name, prop in form.get("schema", {}).get("properties", {}).items():
            if prop.get("type") == "array" and name not in encoding:
                encoding[name] = {"style": "form", "explode": True}
                added += 1

with open(dest, "w") as f:
    json.dump(spec, f)
print(f"{dest}: form array encodings made explicit: {added}", file=sys.stderr)
