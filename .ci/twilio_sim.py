#!/usr/bin/env python3
"""A simulator of Twilio's side of whole voice calls, on loopback, for tests and `make dev`.

It plays what Twilio does between our code and the phones: it accepts the Calls REST API (HTTP
Basic auth, Twilio's JSON resources and errors), rings scripted callees, runs each call's TwiML
(fetched from `Url` or inline `Twiml`) verb by verb, POSTs `<Gather>` digits, `<Record>` results
and `<Dial>` outcomes to their actions, runs `<Number url=...>` whispers on the callee's leg, and
sends status callbacks. Every webhook is signed with twilio-python's `RequestValidator` exactly as
Twilio signs (full URL + sorted POST parameters, HMAC-SHA1 with the auth token) and carries an
`I-Twilio-Idempotency-Token`. It also plays inbound calls to a voice URL.

Commands
--------
  serve    the REST API on a loopback port; first stdout line: `twilio-sim listening on
           http://127.0.0.1:PORT` (the port is the digits after the last `:`), then one line per
           call, verb heard, keypress and callback, phone numbers masked (`+81*******78`).
  inbound  one incoming call to --url, followed to the end; exit status 0 when it completed.
           With --sim http://127.0.0.1:PORT a running `serve` plays it instead (its log has it).

  twilio_sim.py serve --config sim.json [--port 0] [--log sim-log.json] [--callback-order reverse]
  twilio_sim.py inbound --url http://127.0.0.1:9000/voice --from +81312345678 --to +81501234567 \\
      --token 0123456789abcdef0123456789abcdef --keys 1,- [--config sim.json] [--log FILE]

  Under `make dev` (cargo lambda watch serves the function at /lambda-url/incoming-call/ and the
  function rebuilds the https:// URL Twilio signed), a call through the menu, pressing 1:
  twilio_sim.py inbound --token 0123456789abcdef0123456789abcdef --keys 1 \\
      --url https://127.0.0.1:9000/voice \\
      --url-map https://127.0.0.1:9000/=http://127.0.0.1:9000/lambda-url/incoming-call/

Driving it from another program (a Rust test)
---------------------------------------------
Start `twilio_sim.py serve --config FILE --port 0 --log LOG` as a child process, read its first
stdout line for the port, point the code under test at `http://127.0.0.1:PORT` (the API base URL),
place calls, then `GET /_sim/wait?timeout=30` (answers `{"idle": true}` once every call has ended
and the log is written, 408 otherwise) and read LOG (always one whole JSON document: it is
rewritten by rename, within 50 ms of any change and at once by /_sim/wait; `GET /_sim/log`
returns the same). `POST /_sim/inbound` with a JSON body
`{"url", "from", "to", "keys", "method", "status_callback"}` plays an inbound call (202 + its SID).
`POST /_sim/replay` with `{"n": N}` sends logged webhook N again, identical (same signature, same
I-Twilio-Idempotency-Token), and answers `{"status", "response", "error"}`: a replayed or retried
genuine webhook.
Keep reading (or discarding) stdout, or the child blocks when the pipe fills.

Config file (JSON; every key optional; command-line flags override it)
----------------------------------------------------------------------
  {
    "account_sid": "AC00000000000000000000000000000000",
    "auth_token": "0123456789abcdef0123456789abcdef",      # Basic auth password, webhook key
    "api_keys": {"SK...": "secret"},                        # more Basic auth users for the account
    "webhook_token": "...",           # sign webhooks with this instead of auth_token (rotation tests)
    "numbers": {"+81312345678": SCRIPT, ...},              # callees (and inbound callers)
    "default_script": SCRIPT,         # numbers not listed (default {"answer": "human"})
    "callback_order": "in-order" | "reverse" | "shuffle",  # status callbacks of each call; out
                                      # of order, they are held until the call ends, then sent
    "seed": 1,                        # for "shuffle"
    "time_scale": 0,                  # real seconds slept per simulated second (0: no waiting)
    "url_map": {"https://127.0.0.1:9000/": "http://127.0.0.1:9000/"},
                                      # sign the URL as given, deliver to the mapped prefix
    "plain_http": false,              # deliver any https:// URL over plain http (same host:port)
    "whisper_hangup_dial_status": "no-answer"
                                      # DialCallStatus when a <Number url> whisper hangs up (see
                                      # Executor.dial for the documentation behind the default)
  }

SCRIPT (what one phone number does when called, or when it calls in):
  answer          "human" (default) | "machine" | "no-answer" | "busy" | "failed"
  keys            what is entered at each successive <Gather>: "1", "*", "12#", null = no input
                  (missing entries = no input), or {"digits": "1", "after": 4}: pressed after 4
                  simulated seconds (real ones with time_scale); at or past the Gather's timeout
                  the keys are lost and the Gather ends without input
  hangup_after_gathers  N: hangs up when reaching Gather number N+1 (0 = at the first Gather)
  ring_seconds    seconds before answering (default 3; >= the Timeout means no-answer)
  duration        seconds the person stays on the line once answered (hangs up before the next
                  verb past it; on a bridged <Dial> leg: the talk time, default 10)
  record_seconds  how long they speak at a <Record> (default 5)
  play_seconds    how long each <Play> lasts (default 3; a <Say> lasts 1 s per 10 characters)
  hangup_after_record  true: hangs up to end a <Record> (Digits=hangup) instead of pressing #
  queue_seconds   real seconds the call stays `queued` (interruptible; lets a test cancel it)
  sip_response_code  overrides the SipResponseCode of the final status callback
  api_error       {"status": 400, "code": 21214, "message": "..."}: Calls.json refuses calls to it;
                  with "create": true the call is placed anyway and the error answered (a 500
                  after the call exists); a list: one entry (or null = accept) per successive
                  request for that number, then accepted (429 twice, then 201)

Log format (`--log FILE`, `GET /_sim/log`)
------------------------------------------
  {"account_sid": "...", "calls": [CALL RESOURCE, ...], "events": [EVENT, ...]}
Calls are Twilio call resources (as `GET Calls/{Sid}.json` answers), oldest first. Events are in
the order they happened, each with "n" (0, 1, ...), "time" (ISO 8601 UTC) and "kind":
  api        a REST request received: method, path, query ([[k, v]]), form ([[k, v]]), user (Basic
             auth user or null), status, response (parsed JSON)
  webhook    a request sent: call_sid, purpose (voice | gather | record | dial | redirect | whisper
             | status-callback), method, url (as signed), sent_to (as delivered), params ([[k, v]]),
             signature, idempotency_token, status (HTTP status or null), response (text), error
  call       a call's state changed: call_sid, parent_call_sid, direction, from, to, status
             (queued | initiated | ringing | in-progress | completed | busy | no-answer | failed |
             canceled), answered_by, duration
  verb       a TwiML verb executed: call_sid, verb, text/url/attrs, and for Gather `digits`
  keypress   call_sid, digits (what the script entered)
  error      call_sid, message (e.g. a webhook answered 500: Twilio's "application error")
Phone numbers are never masked in the log (tests assert on them); only stdout masks them.
"""

import argparse
import base64
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT = "AC00000000000000000000000000000000"
DEFAULT_TOKEN = "0123456789abcdef0123456789abcdef"
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
EVENTS = ("initiated", "ringing", "answered", "completed")
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
# SipResponseCode of the final callback per outcome (a call answered and ended normally: 200).
SIP_CODES = {"completed": 200, "busy": 486, "no-answer": 487, "canceled": 487, "failed": 404}


# ---------------------------------------------------------------- helpers

def mask(raw):
    """Like the Rust `phone::mask`: the first three and last two characters of a long value."""
    raw = str(raw)
    if len(raw) < 8:
        return "***"
    return raw[:3] + "*" * (len(raw) - 5) + raw[-2:]


def mask_digits(text):
    """Masks every run of six or more digits (with its `+`) in free text."""
    return re.sub(r"\+?\d{6,}", lambda m: mask(m.group(0)), str(text))


def new_sid(prefix):
    return prefix + uuid.uuid4().hex


def now():
    return datetime.now(timezone.utc)


def rfc2822(dt):
    return format_datetime(dt) if dt else None


class MultiDict(dict):
    """Repeated parameter names, read by RequestValidator through getall()."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = list(pairs)
        for k, v in self.pairs:
            self.setdefault(k, v)

    def getall(self, key):
        return [v for k, v in self.pairs if k == key]


def sign(token, url, pairs):
    return RequestValidator(token).compute_signature(url, MultiDict(pairs))


def twilio_error(status, code, message):
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def parse_keys(text):
    """CLI keys: comma-separated entries, `-` (or empty, `none`) for no input."""
    if text is None:
        return []
    return [None if k.strip().lower() in ("", "-", "none", "null") else k.strip() for k in text.split(",")]


def parse_time_filter(value, end_of_day):
    value = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        d = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return d + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else d
    v = value.replace("Z", "+00:00")
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


class Hangup(Exception):
    """The leg ended (a <Hangup>, the person hanging up, an application error)."""

    def __init__(self, status="completed", reason=""):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------- the simulator

class Simulator:
    def __init__(self, config=None, log_path=None, quiet=False, out=None):
        c = dict(config or {})
        self.account_sid = c.get("account_sid", DEFAULT_ACCOUNT)
        self.auth_token = c.get("auth_token", DEFAULT_TOKEN)
        self.webhook_token = c.get("webhook_token") or self.auth_token
        self.api_keys = dict(c.get("api_keys", {}))
        self.numbers = dict(c.get("numbers", {}))
        self.default_script = dict(c.get("default_script", {"answer": "human"}))
        self.callback_order = c.get("callback_order", "in-order")
        if self.callback_order not in ("in-order", "reverse", "shuffle"):
            raise ValueError(f"callback_order: {self.callback_order!r}")
        self.rng = random.Random(c.get("seed", 1))
        self.time_scale = float(c.get("time_scale", 0))
        self.url_map = dict(c.get("url_map", {}))
        self.plain_http = bool(c.get("plain_http", False))
        self.whisper_hangup_dial_status = c.get("whisper_hangup_dial_status", "no-answer")
        self.log_path = log_path
        self.quiet = quiet
        self.out = out or sys.stdout
        self.lock = threading.RLock()
        self.idle = threading.Condition(self.lock)
        self.calls = {}  # sid -> Call, in creation order
        self.api_attempts = {}  # To -> Calls.json requests seen (for a list of api_error)
        self.events = []
        self.active = 0
        self.dirty = threading.Event()
        self.write_lock = threading.Lock()
        self.closing = False
        self.writer = None
        if log_path:
            self.flush()
            self.writer = threading.Thread(target=self._writer, daemon=True, name="twilio-sim-log")
            self.writer.start()
        self.server = None
        self.port = None
        self.base_url = None

    # -- output and log

    def say(self, line):
        if not self.quiet:
            with self.lock:
                print(line, file=self.out, flush=True)

    def record(self, kind, **fields):
        with self.lock:
            entry = {"n": len(self.events), "time": now().isoformat(), "kind": kind}
            entry.update(fields)
            self.events.append(entry)
            self.dirty.set()
            return entry

    def snapshot(self):
        with self.lock:
            return {
                "account_sid": self.account_sid,
                "calls": [c.resource() for c in self.calls.values()],
                "events": list(self.events),
            }

    def flush(self):
        """Writes the log file now (the writer thread otherwise does within 50 ms of a change)."""
        if not self.log_path:
            return
        with self.write_lock:
            self.dirty.clear()
            data = self.snapshot()
            tmp = f"{self.log_path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self.log_path)

    def _writer(self):
        # Rewriting the whole log on every entry is quadratic (1,000 calls took minutes): coalesce.
        while not self.closing:
            self.dirty.wait()
            time.sleep(0.05)
            if not self.closing:
                self.flush()

    def script_for(self, number):
        s = dict(self.default_script)
        s.update(self.numbers.get(number, {}))
        return s

    def sleep(self, seconds, interrupt=None):
        """Simulated time passes; real time only with a time scale."""
        real = seconds * self.time_scale
        if real > 0:
            if interrupt is not None:
                interrupt.wait(real)
            else:
                time.sleep(real)

    def wait_idle(self, timeout=30.0):
        """Waits until every call has ended, then writes the log: True, or False on timeout."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        self.flush()
        return True

    def _started(self):
        with self.lock:
            self.active += 1

    def _finished(self):
        with self.idle:
            self.active -= 1
            self.idle.notify_all()

    # -- webhooks

    def delivery_url(self, url):
        for prefix, target in self.url_map.items():
            if url.startswith(prefix):
                return target + url[len(prefix):]
        if self.plain_http and url.startswith("https://"):
            return "http://" + url[len("https://"):]
        return url

    def send_webhook(self, call, purpose, url, method, pairs):
        """Sends one signed request as Twilio does; returns (status, body text, error)."""
        method = (method or "POST").upper()
        pairs = [(k, "" if v is None else str(v)) for k, v in pairs]
        if method == "GET":
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            signed_url = url + sep + urllib.parse.urlencode(pairs)
            signature = sign(self.webhook_token, signed_url, [])
        else:
            signed_url = url
            signature = sign(self.webhook_token, url, pairs)
        return self._deliver(call.sid, call.tag, purpose, method, signed_url, pairs, signature, str(uuid.uuid4()))

    def _deliver(self, call_sid, tag, purpose, method, signed_url, pairs, signature, token, replay_of=None):
        body = None if method == "GET" else urllib.parse.urlencode(pairs).encode()
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": token,
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
        }
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        target = self.delivery_url(signed_url)
        status, text, error, ctype = None, "", None, ""
        try:
            req = urllib.request.Request(target, data=body, headers=headers, method=method)
            with urllib.request.urlopen(req, timeout=15) as resp:
                status, text = resp.status, resp.read().decode("utf-8", "replace")
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read().decode("utf-8", "replace"), e.headers.get("Content-Type", "")
        except Exception as e:  # connection refused, timeout: Twilio's 11200-class errors
            error = f"{type(e).__name__}: {e}"
        fields = dict(call_sid=call_sid, purpose=purpose, method=method, url=signed_url, sent_to=target,
                      params=[list(p) for p in pairs], signature=signature, idempotency_token=token,
                      status=status, content_type=ctype, response=text, error=error)
        if replay_of is not None:
            fields["replay_of"] = replay_of
        self.record("webhook", **fields)
        shown = f"HTTP {status}" if status is not None else f"failed ({error})"
        what = purpose
        if purpose == "status-callback":
            p = dict(pairs)
            what = f"callback #{p.get('SequenceNumber')} {p.get('CallStatus')}"
        if replay_of is not None:
            what = f"replay of #{replay_of}: {what}"
        self.say(f"{tag} {what} {method} {mask_digits(signed_url)} -> {shown}")
        return status, text, error

    def replay(self, n):
        """Sends logged webhook number n again, byte for byte: same signature, same idempotency
        token (what Twilio's own retries look like, and what a captured request replayed is)."""
        with self.lock:
            ev = self.events[n] if 0 <= n < len(self.events) else None
        if ev is None or ev["kind"] != "webhook":
            raise ValueError(f"event {n} is not a webhook")
        tag = f"[{ev['call_sid'][:4]}…{ev['call_sid'][-4:]}]"
        return self._deliver(ev["call_sid"], tag, ev["purpose"], ev["method"], ev["url"],
                             [tuple(p) for p in ev["params"]], ev["signature"], ev["idempotency_token"], replay_of=n)

    # -- REST API

    def authenticate(self, header):
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except Exception:
            return None
        if user == self.account_sid and password == self.auth_token:
            return user
        if user in self.api_keys and password == self.api_keys[user]:
            return user
        return None

    def create_call(self, form):
        """POST Calls.json: validates like Twilio, then rings the call in the background."""
        values = {}
        for k, v in form:
            values.setdefault(k, v)
        to, from_ = values.get("To", ""), values.get("From", "")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not E164.match(from_):
            return twilio_error(400, 21212, f"Invalid From Number (caller ID): {from_}")
        url, twiml = values.get("Url"), values.get("Twiml")
        if not url and not twiml and not values.get("ApplicationSid"):
            return twilio_error(400, 21205, "Url parameter is required")
        if url and not re.match(r"^https?://", url):
            return twilio_error(400, 21205, f"Url is not a valid URL: {url}")
        if not url and twiml and len(twiml) > 4000:
            return twilio_error(400, 32018, "Twiml is longer than 4000 characters")
        events = [v for k, v in form if k == "StatusCallbackEvent"]
        for e in events:
            for part in e.split(" "):
                if part not in EVENTS:
                    return twilio_error(400, 21626, f"Invalid StatusCallbackEvent: {e}")
        timeout = values.get("Timeout", "60")
        if not timeout.isdigit():
            return twilio_error(400, 20001, f"Timeout must be an integer: {timeout}")
        # Twilio documents a 600 s maximum; it rings at most that long rather than refusing.
        timeout = str(min(max(int(timeout), 1), 600))
        script = self.script_for(to)
        err = script.get("api_error")
        if isinstance(err, list):  # one entry per successive request for this number, then accept
            with self.lock:
                n = self.api_attempts.get(to, 0)
                self.api_attempts[to] = n + 1
            err = err[n] if n < len(err) else None
        if err:
            error = twilio_error(err.get("status", 400), err.get("code", 21211), err.get("message", "Refused by the script"))
            if not err.get("create"):
                return error
        call = Call(self, "outbound-api", from_, to, script)
        call.url = url
        call.method = values.get("Method", "POST")
        call.twiml = None if url else twiml
        call.status_callback = values.get("StatusCallback")
        call.status_callback_method = values.get("StatusCallbackMethod", "POST")
        call.events = set(" ".join(events).split()) or {"completed"}
        call.machine_detection = values.get("MachineDetection")
        call.timeout = int(timeout)
        call.time_limit = int(values["TimeLimit"]) if values.get("TimeLimit", "").isdigit() else 14400
        call.register()
        created = call.resource()
        self._started()
        threading.Thread(target=call.run_outbound, daemon=True, name=call.sid).start()
        if err:  # "create": the call exists and rings, but the answer is the error (a 500 after the fact)
            return error
        return 201, created

    def list_calls(self, query):
        q = {}
        for k, v in query:
            q.setdefault(k, v)
        with self.lock:
            calls = list(self.calls.values())
        after = q.get("StartTime>") or q.get("StartTime>=")
        before = q.get("StartTime<") or q.get("StartTime<=")
        try:
            lo = parse_time_filter(after, False) if after else None
            hi = parse_time_filter(before, True) if before else None
            exact = q.get("StartTime")
            day = parse_time_filter(exact, False) if exact else None
        except ValueError as e:
            return twilio_error(400, 20001, f"Invalid StartTime: {e}")
        out = []
        for c in calls:
            if "To" in q and c.to != q["To"]:
                continue
            if "From" in q and c.from_ != q["From"]:
                continue
            if "Status" in q and c.status != q["Status"]:
                continue
            if "ParentCallSid" in q and c.parent_call_sid != q["ParentCallSid"]:
                continue
            # Calls that never started (queued, canceled before ringing) have no StartTime.
            if (lo or hi or day) and c.start_time is None:
                continue
            if lo and c.start_time < lo:
                continue
            if hi and c.start_time > hi:
                continue
            if day and c.start_time.date() != day.date():
                continue
            out.append(c.resource())
        out.reverse()  # newest first, as Twilio lists them
        size = int(q["PageSize"]) if q.get("PageSize", "").isdigit() else 50
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        return 200, {
            "calls": out[:size], "end": max(0, min(size, len(out)) - 1), "first_page_uri": f"{path}?PageSize={size}&Page=0",
            "next_page_uri": None, "page": 0, "page_size": size, "previous_page_uri": None, "start": 0,
            "uri": f"{path}?PageSize={size}&Page=0",
        }

    def update_call(self, sid, form):
        call = self.calls.get(sid)
        if call is None:
            return twilio_error(404, 20404, f"The requested resource /{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json was not found")
        values = dict(form)
        status = values.get("Status")
        if status not in (None, "canceled", "completed"):
            return twilio_error(400, 21218, f"Invalid Status: {status}")
        if status:
            call.request_end(status)
            # Twilio answers with the call as updated: give the call's thread a moment to end it.
            deadline = time.monotonic() + 2
            while call.end_request and call.status not in FINAL and time.monotonic() < deadline:
                time.sleep(0.01)
        return 200, call.resource()

    # -- inbound

    def start_inbound(self, url, from_, to, keys=None, method="POST", status_callback=None, script=None):
        s = dict(self.script_for(from_))
        s.update(script or {})
        if keys is not None:
            s["keys"] = keys
        call = Call(self, "inbound", from_, to, s)
        call.url, call.method = url, method
        call.status_callback = status_callback
        call.events = {"completed"}
        call.register()
        self._started()
        return call

    def play_inbound(self, *args, **kwargs):
        call = self.start_inbound(*args, **kwargs)
        call.run_inbound()
        return call

    # -- server

    def start(self, port=0, host="127.0.0.1"):
        sim = self

        class Handler(ApiHandler):
            simulator = sim

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True, name="twilio-sim").start()
        return self.port

    def stop(self):
        """Stops serving, writes the log a last time; nothing is written after this returns."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.writer:
            self.closing = True
            self.dirty.set()
            self.writer.join()
            self.writer = None
            self.flush()
            self.log_path = None


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    simulator = None
    server_version = "twilio-sim"

    def log_message(self, *args):
        pass

    def _send_json(self, status, body, extra=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_HEAD(self):
        self._send_json(200, {})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        sim = self.simulator
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        raw = self._body() if method == "POST" else b""
        if path.startswith("/_sim/"):
            return self._control(path, dict(query), raw)
        form = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            self._api(method, path, query, form)
        except Exception as e:  # a simulator bug: answer like Twilio's 500 and keep serving
            import traceback
            sim.record("error", call_sid=None, message=f"simulator error on {method} {path}: {e!r}",
                       traceback=traceback.format_exc())
            self._send_json(*twilio_error(500, 20500, "Internal Server Error"))

    def _api(self, method, path, query, form):
        sim = self.simulator
        user = sim.authenticate(self.headers.get("Authorization"))
        m = re.fullmatch(rf"/{API_VERSION}/Accounts/([^/]+)/Calls(?:/([^/]+))?\.json", path)
        extra = None
        if not path.startswith(f"/{API_VERSION}/Accounts/"):
            status, body = twilio_error(404, 20404, f"The requested resource {path} was not found")
        elif user is None or (m and m.group(1) != sim.account_sid):
            # Twilio answers 401 with 20003 to missing or wrong credentials, and to credentials
            # of one account used on another account's path.
            status, body = twilio_error(401, 20003, "Authenticate")
            extra = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        elif not m:
            status, body = twilio_error(404, 20404, f"The requested resource {path} was not found")
        elif m.group(2) is None and method == "POST":
            status, body = sim.create_call(form)
        elif m.group(2) is None and method == "GET":
            status, body = sim.list_calls(query)
        elif method == "GET":
            call = sim.calls.get(m.group(2))
            status, body = (200, call.resource()) if call else twilio_error(
                404, 20404, f"The requested resource {path} was not found")
        elif method == "POST":
            status, body = sim.update_call(m.group(2), form)
        else:
            status, body = twilio_error(405, 20004, "Method not allowed")
        sim.record("api", method=method, path=path, query=[list(q) for q in query], form=[list(f) for f in form],
                   user=user, status=status, response=body)
        sim.say(f"API {method} {path} -> {status}" + (f" {body.get('code')}" if status >= 400 else ""))
        self._send_json(status, body, extra)

    def _control(self, path, query, raw):
        sim = self.simulator
        if path == "/_sim/log":
            return self._send_json(200, sim.snapshot())
        if path == "/_sim/wait":
            ok = sim.wait_idle(float(query.get("timeout", "30")))
            return self._send_json(200 if ok else 408, {"idle": ok})
        if path == "/_sim/replay" and self.command == "POST":
            try:
                status, text, error = sim.replay(int(json.loads(raw or b"{}")["n"]))
            except (ValueError, KeyError, TypeError) as e:
                return self._send_json(400, {"error": str(e)})
            return self._send_json(200, {"status": status, "response": text, "error": error})
        if path == "/_sim/inbound" and self.command == "POST":
            try:
                req = json.loads(raw or b"{}")
                keys = req.get("keys")
                if isinstance(keys, str):
                    keys = parse_keys(keys)
                call = sim.start_inbound(req["url"], req.get("from", "+81312345678"), req.get("to", "+81501234567"),
                                         keys=keys, method=req.get("method", "POST"),
                                         status_callback=req.get("status_callback"), script=req.get("script"))
            except (ValueError, KeyError) as e:
                return self._send_json(400, {"error": str(e)})
            threading.Thread(target=call.run_inbound, daemon=True, name=call.sid).start()
            return self._send_json(202, {"sid": call.sid})
        return self._send_json(404, {"error": "unknown control path"})


# ---------------------------------------------------------------- one call leg

class Call:
    def __init__(self, sim, direction, from_, to, script, parent=None):
        self.sim = sim
        self.sid = new_sid("CA")
        self.direction = direction
        self.from_, self.to = from_, to
        self.script = script
        self.parent_call_sid = parent.sid if parent else None
        self.status = "queued" if direction == "outbound-api" else "ringing"
        self.date_created = now()
        self.start_time = None
        self.end_time = None
        self.duration = None
        self.answered_at = None  # simulated seconds
        # Simulated seconds since the call was created; a <Dial> leg starts at its parent's time.
        self.clock = parent.clock if parent else 0.0
        self.answered_by = None
        self.url = None
        self.method = "POST"
        self.twiml = None
        self.status_callback = None
        self.status_callback_method = "POST"
        self.events = {"completed"}
        self.machine_detection = None
        self.timeout = 60
        self.time_limit = 14400
        self.keys = list(script.get("keys", []))
        self.gathers = 0
        self.sequence = 0
        self.pending_callbacks = []
        self.end_request = None
        self.wake = threading.Event()
        self.tag = f"[{self.sid[:4]}…{self.sid[-4:]}]"

    # -- resource

    def register(self):
        with self.sim.lock:
            self.sim.calls[self.sid] = self
        self.sim.record("call", **self._state())
        arrow = f"{mask(self.from_)} -> {mask(self.to)}"
        self.sim.say(f"{self.tag} call {self.direction} {arrow} {self.status}")

    def resource(self):
        acc = self.sim.account_sid
        uri = f"/{API_VERSION}/Accounts/{acc}/Calls/{self.sid}.json"
        return {
            "account_sid": acc, "annotation": None, "answered_by": self.answered_by, "api_version": API_VERSION,
            "caller_name": None, "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(now()), "direction": self.direction,
            "duration": None if self.duration is None else str(self.duration),
            "end_time": rfc2822(self.end_time), "forwarded_from": None, "from": self.from_,
            "from_formatted": self.from_, "group_sid": None, "parent_call_sid": self.parent_call_sid,
            "phone_number_sid": None, "price": None, "price_unit": "USD", "queue_time": "0",
            "sid": self.sid, "start_time": rfc2822(self.start_time), "status": self.status,
            "subresource_uris": {
                "recordings": uri.replace(".json", "/Recordings.json"),
                "notifications": uri.replace(".json", "/Notifications.json"),
            },
            "to": self.to, "to_formatted": self.to, "trunk_sid": None, "uri": uri,
        }

    def _state(self):
        return dict(call_sid=self.sid, parent_call_sid=self.parent_call_sid, direction=self.direction,
                    **{"from": self.from_}, to=self.to, status=self.status, answered_by=self.answered_by,
                    duration=self.duration)

    def set_status(self, status, event=None):
        with self.sim.lock:
            self.status = status
            if status in ("ringing", "in-progress") and self.start_time is None:
                self.start_time = now()
            if status in FINAL:
                self.end_time = now()
                talked = 0 if self.answered_at is None else self.clock - self.answered_at
                self.duration = int(math.ceil(talked)) if talked > 0 else 0
        self.sim.record("call", **self._state())
        self.sim.say(f"{self.tag} {status}" + (f" ({self.answered_by})" if status == "in-progress" and self.answered_by else "")
                     + (f" after {self.duration}s" if status in FINAL else ""))
        if event:
            self.callback(event)

    def initiated(self):
        """Dialing has begun: an `initiated` callback; the resource itself stays `queued`."""
        self.sim.record("call", **dict(self._state(), status="initiated"))
        self.sim.say(f"{self.tag} initiated")
        self.callback("initiated", call_status="initiated")

    def request_end(self, status):
        """REST update: canceled ends a queued or ringing call, completed any live one."""
        with self.sim.lock:
            live = self.status not in FINAL
            ringing = self.status in ("queued", "ringing", "initiated")
            if status == "canceled" and ringing:
                self.end_request = "canceled"
            elif status == "completed" and live:
                self.end_request = "canceled" if ringing else "completed"
            if self.end_request:
                self.wake.set()

    def check_end(self):
        if self.end_request == "completed":
            raise Hangup("completed", "ended through the REST API")

    # -- simulated time

    def advance(self, seconds):
        """Time passes on the line; the call's TimeLimit or the person's `duration` may cut it."""
        limits = []
        if self.answered_at is not None:
            limits.append((self.answered_at + self.time_limit, "TimeLimit reached"))
            if self.script.get("duration") is not None:
                limits.append((self.answered_at + float(self.script["duration"]), "the person hung up"))
        end = self.clock + seconds
        for at, why in sorted(limits):
            if end > at:
                self.sim.sleep(max(0.0, at - self.clock), self.wake)
                self.clock = max(self.clock, at)
                self.sim.record("verb", call_sid=self.sid, verb="(hangs up)", text=why)
                raise Hangup("completed", why)
        self.clock = end
        self.sim.sleep(seconds, self.wake)
        self.check_end()

    def person_still_there(self):
        limit = self.script.get("duration")
        if limit is not None and self.answered_at is not None and self.clock - self.answered_at >= float(limit):
            self.sim.record("verb", call_sid=self.sid, verb="(hangs up)", text="the person hung up")
            raise Hangup("completed", "the person hung up")

    # -- status callbacks

    def base_params(self, call_status=None):
        p = [("AccountSid", self.sim.account_sid), ("ApiVersion", API_VERSION), ("CallSid", self.sid),
             ("CallStatus", call_status or self.status), ("Called", self.to), ("Caller", self.from_),
             ("Direction", self.direction), ("From", self.from_), ("To", self.to)]
        if self.parent_call_sid:
            p.append(("ParentCallSid", self.parent_call_sid))
        if self.answered_by and self.machine_detection:
            p.append(("AnsweredBy", self.answered_by))
        return p

    def callback(self, event, call_status=None):
        """Builds the status callback of one event; sends it, or holds it (out-of-order mode)."""
        final = self.status in FINAL
        if not self.status_callback or (event not in self.events and not final):
            return
        params = self.base_params(call_status) + [
            ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", str(self.sequence)),
            ("Timestamp", rfc2822(now())),
        ]
        if final:
            params.append(("CallDuration", str(self.duration or 0)))
            code = self.script.get("sip_response_code", SIP_CODES.get(self.status, 200))
            params.append(("SipResponseCode", str(code)))
        elif event == "answered":
            params.append(("SipResponseCode", "200"))
        self.sequence += 1
        if self.sim.callback_order == "in-order":
            self.sim.send_webhook(self, "status-callback", self.status_callback, self.status_callback_method, params)
        else:
            self.pending_callbacks.append(params)

    def flush_callbacks(self):
        pending, self.pending_callbacks = self.pending_callbacks, []
        if self.sim.callback_order == "reverse":
            pending.reverse()
        elif self.sim.callback_order == "shuffle":
            self.sim.rng.shuffle(pending)
        for params in pending:
            self.sim.send_webhook(self, "status-callback", self.status_callback, self.status_callback_method, params)

    # -- the outbound call, from queued to its end

    def run_outbound(self):
        try:
            self._ring_and_answer()
            if self.status == "in-progress":
                self._run_twiml_safely(self.url, self.method, self.twiml, purpose="voice")
        finally:
            self.flush_callbacks()
            self.sim._finished()

    def _ring_and_answer(self):
        queue = float(self.script.get("queue_seconds", 0))
        if queue > 0:
            self.wake.wait(queue)
        if self.end_request:
            return self.set_status("canceled", "completed")
        self.initiated()
        answer = self.script.get("answer", "human")
        if answer == "failed":
            return self.set_status("failed", "completed")
        ring = float(self.script.get("ring_seconds", 0 if answer == "busy" else 3))
        if ring > 0 or answer in ("human", "machine", "no-answer"):
            self.set_status("ringing", "ringing")
        if answer == "busy":
            self.clock += ring
            return self.set_status("busy", "completed")
        if answer == "no-answer" or ring >= self.timeout:
            self.clock += self.timeout
            self.sim.sleep(self.timeout, self.wake)
            return self.set_status("canceled" if self.end_request else "no-answer", "completed")
        self.clock += ring
        self.sim.sleep(ring, self.wake)
        if self.end_request:
            return self.set_status("canceled", "completed")
        self.answered_at = self.clock
        if self.machine_detection:
            if answer == "machine":
                self.answered_by = "machine_end_beep" if self.machine_detection == "DetectMessageEnd" else "machine_start"
            else:
                self.answered_by = "human"
        self.set_status("in-progress", "answered")

    def _run_twiml_safely(self, url, method, twiml, purpose, extra=()):
        end = "completed"
        try:
            Executor(self).run(url, method, twiml, purpose, list(extra))
        except Hangup as h:
            end = h.status
            if h.reason:
                self.sim.say(f"{self.tag} ends: {h.reason}")
        except Exception as e:  # a bug here, not Twilio behaviour: end the call, say so, keep serving
            import traceback
            self.sim.record("error", call_sid=self.sid, message=f"simulator error: {e!r}",
                            traceback=traceback.format_exc())
            self.sim.say(f"{self.tag} simulator error: {e!r}")
        if self.status not in FINAL:
            self.set_status(end, "completed")

    # -- the inbound call

    def run_inbound(self):
        try:
            self.start_time = now()
            self._run_twiml_safely(self.url, self.method, None, purpose="voice")
        finally:
            self.flush_callbacks()
            self.sim._finished()

    # -- the person's side

    def next_keys(self):
        if self.script.get("answer") == "machine":  # a voicemail greeting presses nothing
            return None
        return self.keys.pop(0) if self.keys else None

    def gather_reached(self):
        self.gathers += 1
        limit = self.script.get("hangup_after_gathers")
        if limit is not None and self.gathers > int(limit):
            self.sim.record("verb", call_sid=self.sid, verb="(hangs up)", text=f"at Gather {self.gathers}")
            self.sim.say(f"{self.tag} the person hangs up at Gather {self.gathers}")
            raise Hangup("completed", "the person hung up")


# ---------------------------------------------------------------- TwiML

class Executor:
    """Runs TwiML on one leg the way Twilio does: document by document, verb by verb."""

    def __init__(self, call):
        self.call = call
        self.sim = call.sim
        self.first_verb = True

    def fetch(self, url, method, purpose, extra):
        status, text, error = self.sim.send_webhook(self.call, purpose, url, method, self.call.base_params() + extra)
        if error or not 200 <= status < 300:
            self.fail(f"{purpose} webhook {mask_digits(url)} answered {status or error} (Twilio error 11200)")
        return text

    def fail(self, message):
        self.sim.record("error", call_sid=self.call.sid, message=message)
        self.sim.say(f"{self.call.tag} error: {message}; Twilio says \"an application error has occurred\"")
        raise Hangup("completed", message)

    def run(self, url, method, twiml, purpose, extra):
        doc_url = url
        text = self.fetch(url, method, purpose, extra) if url else twiml
        while text is not None:
            text, doc_url = self.run_document(text, doc_url)

    def parse(self, text):
        try:
            root = ET.fromstring(text.strip().encode("utf-8") if isinstance(text, str) else text)
        except ET.ParseError as e:
            self.fail(f"the TwiML is not XML: {e} (Twilio error 12100)")
        if root.tag != "Response":
            self.fail(f"the root element is <{root.tag}>, not <Response> (Twilio error 12100)")
        return root

    def resolve(self, doc_url, target):
        target = (target or "").strip()
        if re.match(r"^https?://", target):
            return target
        if not doc_url:
            self.fail(f"relative URL {target!r} in inline TwiML has nothing to resolve against")
        return urllib.parse.urljoin(doc_url, target)

    def verb(self, name, **fields):
        self.sim.record("verb", call_sid=self.call.sid, verb=name, **fields)

    def run_document(self, text, doc_url):
        """Runs one document; returns (next document text, its URL), or (None, None) at the end."""
        root = self.parse(text)
        for el in list(root):
            self.call.check_end()
            if self.call.status == "ringing" and el.tag != "Reject":
                # An inbound call is answered by any TwiML but a first <Reject>.
                self.call.answered_at = self.call.clock
                self.call.set_status("in-progress", "answered")
            self.call.person_still_there()
            result = self.run_verb(el, doc_url)
            self.first_verb = False
            if result is not None:
                return result
        return None, None

    def run_verb(self, el, doc_url):
        tag, call = el.tag, self.call
        if tag in ("Say", "Play", "Pause"):
            self.hear(el, doc_url)
        elif tag == "Gather":
            return self.gather(el, doc_url)
        elif tag == "Record":
            return self.record_verb(el, doc_url)
        elif tag == "Dial":
            return self.dial(el, doc_url)
        elif tag == "Redirect":
            target = self.resolve(doc_url, el.text)
            self.verb("Redirect", url=target)
            self.sim.say(f"{call.tag} Redirect {mask_digits(target)}")
            return self.fetch(target, el.get("method", "POST"), "redirect", []), target
        elif tag == "Hangup":
            self.verb("Hangup")
            self.sim.say(f"{call.tag} Hangup")
            raise Hangup("completed", "")
        elif tag == "Reject":
            reason = el.get("reason", "rejected")
            self.verb("Reject", attrs={"reason": reason})
            self.sim.say(f"{call.tag} Reject ({reason})")
            if call.direction == "inbound" and self.first_verb:
                # Twilio's <Reject> docs: as the first verb the call is not answered and "ends
                # with a status of busy or no-answer, depending on the verb's reason attribute".
                raise Hangup("busy" if reason == "busy" else "no-answer", "rejected")
            raise Hangup("completed", "")
        else:
            self.verb(tag, attrs=dict(el.attrib), unsupported=True)
            self.sim.say(f"{call.tag} <{tag}> is not simulated; skipped")
        return None

    def hear(self, el, doc_url):
        call, tag = self.call, el.tag
        if tag == "Say":
            text = "".join(el.itertext()).strip()
            loop = max(1, int(el.get("loop", "1") or 1))
            attrs = {k: v for k, v in el.attrib.items()}
            self.verb("Say", text=text, attrs=attrs)
            label = " ".join(v for v in (el.get("language"), el.get("voice")) if v)
            self.sim.say(f"{call.tag} Say{f' [{label}]' if label else ''}{f' x{loop}' if loop > 1 else ''}: {mask_digits(text)}")
            call.advance(loop * max(1.0, len(text) / 10))
        elif tag == "Play":
            loop = max(1, int(el.get("loop", "1") or 1))
            if el.get("digits"):
                self.verb("Play", digits=el.get("digits"))
                self.sim.say(f"{call.tag} Play digits {el.get('digits')}")
                call.advance(0.5 * len(el.get("digits")))
            else:
                url = (el.text or "").strip()
                url = urllib.parse.urljoin(doc_url, url) if doc_url else url
                self.verb("Play", url=url, attrs=dict(el.attrib))
                self.sim.say(f"{call.tag} Play{f' x{loop}' if loop > 1 else ''}: {url}")
                call.advance(loop * float(call.script.get("play_seconds", 3)))
        else:
            length = float(el.get("length", "1"))
            self.verb("Pause", attrs={"length": el.get("length", "1")})
            self.sim.say(f"{call.tag} Pause {length:g}s")
            call.advance(length)

    def gather(self, el, doc_url):
        call = self.call
        for child in el:
            if child.tag in ("Say", "Play", "Pause"):
                call.person_still_there()
                self.hear(child, doc_url)
        call.gather_reached()
        num = el.get("numDigits")
        finish = el.get("finishOnKey", "#")
        timeout = float(el.get("timeout", "5"))
        entry = call.next_keys()
        if isinstance(entry, dict):  # {"digits": "1", "after": seconds of hesitation}
            after = float(entry.get("after", 0))
            if after >= timeout:
                self.sim.say(f"{call.tag} Gather: {entry.get('digits')!r} pressed after {after:g}s, too late")
                entry = None  # the Gather timed out first: the keys are lost, as on a real call
            else:
                call.advance(after)
                entry = entry.get("digits")
        digits, finished_on = "", ""
        if entry:
            digits = entry
            if finish and digits.endswith(finish):
                digits, finished_on = digits[: -len(finish)], finish
            if num and num.isdigit():
                digits = digits[: int(num)]
        action = self.resolve(doc_url, el.get("action")) if el.get("action") else doc_url
        attrs = dict(el.attrib)
        if digits:
            self.verb("Gather", attrs=attrs, digits=digits)
            self.sim.record("keypress", call_sid=call.sid, digits=digits)
            self.sim.say(f"{call.tag} Gather: pressed {digits!r}")
            call.advance(len(digits) * 0.5)
        else:
            self.verb("Gather", attrs=attrs, digits=None)
            self.sim.say(f"{call.tag} Gather: no input ({timeout:g}s)")
            call.advance(timeout)
            if el.get("actionOnEmptyResult", "false").lower() != "true":
                return None  # Twilio carries on with the next verb
        if not action:
            self.fail("Gather without action in inline TwiML: nowhere to send the digits")
        params = [("Digits", digits), ("FinishedOnKey", finished_on), ("msg", "Gather End")]
        return self.fetch(action, el.get("method", "POST"), "gather", params), action

    def record_verb(self, el, doc_url):
        call = self.call
        max_length = float(el.get("maxLength", "3600"))
        finish = el.get("finishOnKey", "1234567890*#")
        if el.get("playBeep", "true").lower() != "false":
            self.sim.say(f"{call.tag} Record: beep")
        seconds = min(float(call.script.get("record_seconds", 5)), max_length)
        hung_up = bool(call.script.get("hangup_after_record"))
        rec_sid = new_sid("RE")
        rec_url = f"https://api.twilio.com/{API_VERSION}/Accounts/{self.sim.account_sid}/Recordings/{rec_sid}"
        digits = "hangup" if hung_up else (finish[-1:] if finish else "")
        self.verb("Record", attrs=dict(el.attrib), recording_sid=rec_sid, recording_duration=int(seconds), digits=digits)
        self.sim.say(f"{call.tag} Record: {int(seconds)}s, ended by {digits or 'silence'}")
        call.advance(seconds)
        action = self.resolve(doc_url, el.get("action")) if el.get("action") else doc_url
        if not action:
            self.fail("Record without action in inline TwiML")
        params = [("RecordingUrl", rec_url), ("RecordingDuration", str(int(seconds))),
                  ("RecordingSid", rec_sid), ("Digits", digits)]
        text = self.fetch(action, el.get("method", "POST"), "record", params)
        if hung_up:
            # Twilio still requests the action after a hang-up during <Record>, and ignores the TwiML.
            raise Hangup("completed", "the person hung up after recording")
        return text, action

    def dial(self, el, doc_url):
        call = self.call
        timeout = float(el.get("timeout", "30"))
        caller_id = el.get("callerId") or call.from_
        time_limit = float(el.get("timeLimit", "14400"))
        targets = []
        for child in el:
            if child.tag == "Number":
                url = self.resolve(doc_url, child.get("url")) if child.get("url") else None
                targets.append((child.text.strip(), url, child.get("method", "POST"), child))
            else:
                self.verb("Dial", attrs=dict(el.attrib), unsupported=child.tag)
                self.sim.say(f"{call.tag} Dial <{child.tag}> is not simulated; treated as failed")
        if not list(el) and (el.text or "").strip():
            targets.append(((el.text or "").strip(), None, "POST", None))
        self.verb("Dial", attrs=dict(el.attrib), numbers=[t[0] for t in targets])
        self.sim.say(f"{call.tag} Dial {', '.join(mask(t[0]) for t in targets)} (timeout {timeout:g}s)")

        legs, outcomes = [], []
        for number, url, method, noun in targets:
            script = self.sim.script_for(number)
            leg = Call(self.sim, "outbound-dial", caller_id, number, script, parent=call)
            leg.status = "queued"
            if noun is not None and noun.get("statusCallback"):
                leg.status_callback = self.resolve(doc_url, noun.get("statusCallback"))
                leg.status_callback_method = noun.get("statusCallbackMethod", "POST")
                leg.events = set((noun.get("statusCallbackEvent") or "completed").replace(",", " ").split())
            leg.register()
            legs.append((leg, url, method, script))
        # Simultaneous ringing: whoever answers first is offered the call (through the whisper,
        # when there is one); the others are canceled once one is bridged.
        order = sorted(legs, key=lambda l: float(l[3].get("ring_seconds", 3)))
        bridged = None
        for leg, url, method, script in order:
            answer = script.get("answer", "human")
            ring = float(script.get("ring_seconds", 0 if answer == "busy" else 3))
            leg.initiated()
            if answer == "failed":
                leg.set_status("failed", "completed")
                outcomes.append("failed")
                continue
            if answer == "busy":
                leg.set_status("busy", "completed")
                outcomes.append("busy")
                continue
            leg.set_status("ringing", "ringing")
            if answer == "no-answer" or ring >= timeout:
                leg.clock += timeout
                leg.set_status("no-answer", "completed")
                outcomes.append("no-answer")
                continue
            leg.clock += ring
            leg.answered_at = leg.clock
            if answer == "machine":
                leg.answered_by = "machine_start"
            leg.set_status("in-progress", "answered")
            accepted = True
            if url:
                accepted = self.whisper(leg, url, method)
            if not accepted:
                # Twilio's docs (https://www.twilio.com/docs/voice/twiml/number, `url`; the same
                # text for <Client>): the url TwiML runs "on the called party's end, after she
                # answers, but before the parties are connected", to give "a chance to decline
                # the phone call using <Gather> and <Hangup>". A declined leg is never connected,
                # and the <Dial> docs (https://www.twilio.com/docs/voice/twiml/dial, DialCallStatus
                # values) define "completed" as "the called party answered the call and was
                # connected to the caller". So the parent's Dial action never gets "completed";
                # it gets "no-answer" (nobody took the call). The docs searched state no value
                # for this exact case in so many words: "whisper_hangup_dial_status" in the
                # config changes it if a real call ever reports another.
                outcomes.append(self.sim.whisper_hangup_dial_status)
                continue
            bridged = leg
            break
        if bridged:
            for leg, *_ in legs:
                if leg is not bridged and leg.status not in FINAL:
                    leg.set_status("canceled", "completed")
            talk = min(float(bridged.script.get("duration", 10)), time_limit)
            self.sim.say(f"{call.tag} connected to {mask(bridged.to)} for {talk:g}s")
            self.verb("Dial", bridged=bridged.sid, talk_seconds=talk)
            bridged.clock += talk
            bridged.set_status("completed", "completed")
            dial_status, dial_sid, dial_duration = "completed", bridged.sid, bridged.duration
        else:
            if self.sim.whisper_hangup_dial_status in outcomes:
                dial_status = self.sim.whisper_hangup_dial_status
            elif "no-answer" in outcomes or not outcomes:
                dial_status = "no-answer"
            elif "busy" in outcomes:
                dial_status = "busy"
            else:
                dial_status = "failed"
            dial_sid = legs[0][0].sid if legs else ""
            dial_duration = 0
        # The caller waited (ringing, whispers, the conversation) until the last leg was done.
        call.advance(max([leg.clock for leg, *_ in legs] + [call.clock]) - call.clock)
        self.sim.say(f"{call.tag} Dial ended: DialCallStatus={dial_status}")
        if not el.get("action"):
            return None  # no action: Twilio continues with the next verb
        action = self.resolve(doc_url, el.get("action"))
        # DialBridged says whether the parties were connected, on every Dial action request.
        params = [("DialCallStatus", dial_status), ("DialCallSid", dial_sid), ("DialCallDuration", str(dial_duration or 0)),
                  ("DialBridged", "true" if bridged else "false")]
        return self.fetch(action, el.get("method", "POST"), "dial", params), action

    def whisper(self, leg, url, method):
        """Runs the <Number url> TwiML on the callee's leg; True when it ran to its end (bridge)."""
        self.sim.say(f"{leg.tag} whisper {mask_digits(url)}")
        ex = Executor(leg)
        try:
            text, doc_url = ex.fetch(url, method, "whisper", []), url
            while text is not None:
                root = ex.parse(text)
                if root.find("Dial") is not None:
                    ex.fail("<Dial> is not allowed in a <Number url> document")
                text, doc_url = ex.run_document(text, doc_url)
        except Hangup as h:
            self.sim.say(f"{leg.tag} whisper hung up{': ' + h.reason if h.reason else ''}")
            leg.set_status("completed", "completed")
            return False
        self.sim.say(f"{leg.tag} whisper accepted")
        return True


# ---------------------------------------------------------------- command line

def load_config(path):
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def apply_flags(config, args):
    c = dict(config)
    for key in ("account_sid", "auth_token", "callback_order", "seed", "time_scale"):
        value = getattr(args, key, None)
        if value is not None:
            c[key] = value
    for item in getattr(args, "api_key", None) or []:
        sid, _, secret = item.partition(":")
        c.setdefault("api_keys", {})[sid] = secret
    for item in getattr(args, "script", None) or []:
        number, _, spec = item.partition("=")
        if os.path.exists(spec):
            with open(spec, encoding="utf-8") as f:
                spec = f.read()
        c.setdefault("numbers", {})[number] = json.loads(spec)
    for item in getattr(args, "url_map", None) or []:
        prefix, sep, target = item.partition("=")
        if not sep:
            raise SystemExit(f"--url-map wants PREFIX=TARGET, got {item!r}")
        c.setdefault("url_map", {})[prefix] = target
    if getattr(args, "plain_http", False):
        c["plain_http"] = True
    return c


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="JSON config (see above)")
    common.add_argument("--log", help="keep the JSON log in this file")
    common.add_argument("--account-sid", dest="account_sid")
    common.add_argument("--auth-token", "--token", dest="auth_token", help="Basic auth password and webhook signing key")
    common.add_argument("--api-key", action="append", help="SK...:secret, also accepted for Basic auth")
    common.add_argument("--script", action="append", help="NUMBER=JSON or NUMBER=FILE: what that number does")
    common.add_argument("--callback-order", dest="callback_order", choices=("in-order", "reverse", "shuffle"))
    common.add_argument("--seed", type=int)
    common.add_argument("--time-scale", dest="time_scale", type=float, help="real seconds per simulated second")
    common.add_argument("--plain-http", action="store_true", help="deliver https:// webhooks over http")
    common.add_argument("--url-map", action="append", metavar="PREFIX=TARGET",
                        help="sign URLs starting with PREFIX as they are, deliver them to TARGET instead")
    common.add_argument("--quiet", action="store_true")
    serve = sub.add_parser("serve", parents=[common], help="the REST API and the calls it places")
    serve.add_argument("--port", type=int, default=0, help="0: pick a free port and print it")
    serve.add_argument("--host", default="127.0.0.1")
    inbound = sub.add_parser("inbound", parents=[common], help="one incoming call to a voice URL")
    inbound.add_argument("--url", required=True, help="the number's voice URL (signed as given)")
    inbound.add_argument("--from", dest="from_", default="+81312345678")
    inbound.add_argument("--to", default="+81501234567")
    inbound.add_argument("--keys", help="the caller's keys at each Gather: 1,*,- (- = no input)")
    inbound.add_argument("--method", default="POST")
    inbound.add_argument("--status-callback")
    inbound.add_argument("--sim", help="http://127.0.0.1:PORT of a running `serve` to play it instead")
    args = parser.parse_args(argv)
    config = apply_flags(load_config(args.config), args)

    if args.command == "serve":
        sim = Simulator(config, log_path=args.log, quiet=args.quiet)
        # SIGTERM (how a test harness stops a child) ends like Ctrl-C: the log is written last.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        port = sim.start(args.port, args.host)  # the (empty) log file exists already
        print(f"twilio-sim listening on http://{args.host}:{port}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()
        return 0

    keys = parse_keys(args.keys) if args.keys is not None else None
    if args.sim:
        body = json.dumps({"url": args.url, "from": args.from_, "to": args.to, "keys": keys,
                           "method": args.method, "status_callback": args.status_callback}).encode()
        req = urllib.request.Request(args.sim.rstrip("/") + "/_sim/inbound", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            sid = json.load(resp)["sid"]
        with urllib.request.urlopen(args.sim.rstrip("/") + "/_sim/wait?timeout=120", timeout=130):
            pass
        with urllib.request.urlopen(f"{args.sim.rstrip('/')}/_sim/log", timeout=10) as resp:
            calls = {c["sid"]: c for c in json.load(resp)["calls"]}
        status = calls[sid]["status"]
    else:
        sim = Simulator(config, log_path=args.log, quiet=args.quiet)
        call = sim.play_inbound(args.url, args.from_, args.to, keys=keys, method=args.method,
                                status_callback=args.status_callback)
        sim.stop()
        status = call.status
    print(f"call ended: {status}", flush=True)
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
