#!/usr/bin/env python3
"""Plays Twilio's part for an incoming call, signing with the official `twilio` package.

  event  prints a Lambda Function URL event (payload 2.0, base64 form body) signed for --url
  send   POSTs a signed webhook to a running function (e.g. under `cargo lambda watch`)
  sign   prints the X-Twilio-Signature for --url and the parameters

The signature always comes from twilio-python's RequestValidator: it is the reference.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from twilio.request_validator import RequestValidator

DEFAULT_PARAMS = {
    "AccountSid": "AC00000000000000000000000000000000",
    "ApiVersion": "2010-04-01",
    "CallSid": "CA00000000000000000000000000000001",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+81312345678",
    "To": "+81501234567",
    "Caller": "+81312345678",
    "Called": "+81501234567",
}


class MultiDict(dict):
    """Repeated parameter names, read by RequestValidator through getall()."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs
        for k, v in pairs:
            self.setdefault(k, v)

    def getall(self, key):
        return [v for k, v in self.pairs if k == key]


def params_from(args):
    given = [item.partition("=")[::2] for item in args.param or []]
    names = {k for k, _ in given}
    defaults = [] if args.bare else [(k, v) for k, v in DEFAULT_PARAMS.items() if k not in names]
    return defaults + given


def signature(token, url, pairs):
    return RequestValidator(token).compute_signature(url, MultiDict(pairs))


def event(args):
    pairs = params_from(args)
    parsed = urllib.parse.urlsplit(args.url)
    body = urllib.parse.urlencode(pairs)
    sig = signature(args.token, args.url, pairs)
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "host": parsed.netloc,
        "i-twilio-idempotency-token": "00000000-0000-4000-8000-000000000000",
        "user-agent": "TwilioProxy/1.1",
        "x-forwarded-proto": "https",
        "x-twilio-signature": sig,
    }
    ev = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parsed.path or "/",
        "rawQueryString": parsed.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": parsed.netloc.split(".")[0],
            "domainName": parsed.netloc,
            "domainPrefix": parsed.netloc.split(".")[0],
            "http": {
                "method": "POST",
                "path": parsed.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "54.172.60.0",
                "userAgent": "TwilioProxy/1.1",
            },
            "requestId": "00000000-0000-4000-8000-000000000001",
            "routeKey": "$default",
            "stage": "$default",
            "time": "24/Nov/2026:07:00:00 +0000",
            "timeEpoch": 1795503600000,
        },
        "body": base64.b64encode(body.encode()).decode(),
        "isBase64Encoded": True,
    }
    if parsed.query:
        ev["queryStringParameters"] = dict(urllib.parse.parse_qsl(parsed.query))
    json.dump(ev, sys.stdout, indent=2, ensure_ascii=False)
    print()


def send(args):
    pairs = params_from(args)
    signed_url = args.signed_url or args.url
    body = urllib.parse.urlencode(pairs).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if not args.unsigned:
        headers["X-Twilio-Signature"] = signature(args.token, signed_url, pairs)
    request = urllib.request.Request(args.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, ctype, text = response.status, response.headers.get("content-type"), response.read().decode()
    except urllib.error.HTTPError as e:
        status, ctype, text = e.code, e.headers.get("content-type"), e.read().decode()
    print(f"HTTP {status} {ctype or ''}".rstrip())
    if text:
        print(text)
    return 0 if 200 <= status < 300 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("event", "send", "sign"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True, help="the URL Twilio requests (and signs)")
        p.add_argument("--token", required=True, help="the auth token to sign with")
        p.add_argument("--param", action="append", help="NAME=VALUE; replaces a default, repeats if given twice")
        p.add_argument("--bare", action="store_true", help="no default call parameters")
        if name == "send":
            p.add_argument("--signed-url", help="the URL to sign when it differs from --url")
            p.add_argument("--unsigned", action="store_true", help="send no signature")
    args = parser.parse_args()
    if args.command == "event":
        event(args)
    elif args.command == "send":
        sys.exit(send(args))
    else:
        print(signature(args.token, args.url, params_from(args)))


if __name__ == "__main__":
    main()
