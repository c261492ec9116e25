#!/usr/bin/env python3
"""Tests of .ci/twilio_sim.py against a small in-process app playing "our webhook".

The app validates every request's X-Twilio-Signature with twilio-python's RequestValidator (and
refuses a bad one with 403, which the tests then see), answers TwiML per route, and records what
it received. Run from the repository root:
    .venv/bin/python .ci/test_twilio_sim.py        (ends with "N passed, M failed"; exit 1 on failure)
    .venv/bin/python -m unittest discover -s .ci -p test_twilio_sim.py
(`-m unittest .ci/test_twilio_sim.py` cannot work: unittest refuses the leading dot.) About 5 s.
TWILIO_SIM=path/to/a/copy.py runs the tests against that copy of the simulator: how each test was
checked to fail for its reason, on a copy with that behaviour broken.
"""

import base64
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twilio.request_validator import RequestValidator

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_PATH = os.environ.get("TWILIO_SIM") or os.path.join(HERE, "twilio_sim.py")
_spec = importlib.util.spec_from_file_location("twilio_sim", SIM_PATH)
sim_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim_mod)

ACCOUNT = "AC" + "a" * 32
TOKEN = "0123456789abcdef0123456789abcdef"
KEY_SID, KEY_SECRET = "SK" + "b" * 32, "key-secret"
OURS = "+81501234567"
ALICE = "+819011112222"
BOB = "+819033334444"
CAROL = "+819055556666"


class MultiDict(dict):
    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs
        for k, v in pairs:
            self.setdefault(k, v)

    def getall(self, key):
        return [v for k, v in self.pairs if k == key]


class WebhookApp:
    """Our side: validates signatures against the URL it is published under, answers TwiML."""

    def __init__(self, routes, public_scheme="http"):
        self.routes = routes
        self.requests = []
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                pairs = urllib.parse.parse_qsl(self.rfile.read(n).decode(), keep_blank_values=True)
                app.handle(self, pairs, self.path)

            def do_GET(self):
                app.handle(self, [], self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"{public_scheme}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path):
        return self.base + path

    def handle(self, handler, pairs, raw_path):
        url = self.base + raw_path
        sig = handler.headers.get("X-Twilio-Signature", "")
        valid = RequestValidator(TOKEN).validate(url, MultiDict(pairs), sig)
        path = urllib.parse.urlsplit(raw_path).path
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(raw_path).query, keep_blank_values=True)
        params = dict(pairs or query)
        entry = {"path": path, "method": handler.command, "params": params, "pairs": pairs or query,
                 "valid": valid, "token": handler.headers.get("I-Twilio-Idempotency-Token")}
        with self.lock:
            self.requests.append(entry)
        if not valid:
            status, body = 403, "bad signature"
        else:
            route = self.routes.get(path)
            if route is None:
                status, body = 404, "no route"
            else:
                body = route(params) if callable(route) else route
                status = 200
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/xml" if status == 200 else "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def at(self, path):
        return [r for r in self.requests if r["path"] == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def twiml(*verbs):
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


class SimTest(unittest.TestCase):
    config = {}

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.log_path = os.path.join(self.tmp.name, "log.json")
        self.apps = []

    def tearDown(self):
        for app in self.apps:
            app.stop()
        if getattr(self, "sim", None):
            self.sim.stop()
        self.tmp.cleanup()

    def start(self, routes, config=None, public_scheme="http"):
        app = WebhookApp(routes, public_scheme)
        self.apps.append(app)
        cfg = {"account_sid": ACCOUNT, "auth_token": TOKEN, "api_keys": {KEY_SID: KEY_SECRET}}
        cfg.update(config or {})
        self.sim = sim_mod.Simulator(cfg, log_path=self.log_path, quiet=True)
        self.sim.start(0)
        return app

    def api(self, method, path, form=None, user=ACCOUNT, password=TOKEN, raw_query=None):
        url = f"{self.sim.base_url}/2010-04-01/Accounts/{ACCOUNT}/{path}"
        if raw_query:
            url += "?" + raw_query
        data = urllib.parse.urlencode(form or [], doseq=True).encode() if method == "POST" else None
        req = urllib.request.Request(url, data=data, method=method)
        if user is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def place(self, to, app, voice="/voice", **extra):
        form = [("To", to), ("From", OURS), ("Url", app.url(voice))]
        for k, v in extra.items():
            for item in v if isinstance(v, list) else [v]:
                form.append((k, item))
        status, body = self.api("POST", "Calls.json", form)
        self.assertEqual(status, 201, body)
        return body

    def finish(self):
        self.assertTrue(self.sim.wait_idle(10), "calls still running")
        for app in self.apps:
            bad = [r for r in app.requests if not r["valid"]]
            self.assertEqual(bad, [], "a webhook failed RequestValidator")
        with open(self.log_path, encoding="utf-8") as f:
            return json.load(f)

    def call(self, sid):
        status, body = self.api("GET", f"Calls/{sid}.json")
        self.assertEqual(status, 200)
        return body


class OutboundCalls(SimTest):
    def test_callee_presses_star_then_1_at_a_gather(self):
        menu = twiml('<Gather numDigits="1" action="/ack" timeout="5"><Say language="ja-JP">1を押してください</Say></Gather>',
                     "<Say>no input</Say><Hangup/>")
        seen = []

        def ack(p):
            seen.append(p["Digits"])
            if p["Digits"] == "*":
                return twiml("<Redirect>/voice</Redirect>")  # repeat the message
            return twiml("<Say>acknowledged</Say><Hangup/>")

        app = self.start({"/voice": menu, "/ack": ack}, {"numbers": {ALICE: {"keys": ["*", "1"]}}})
        created = self.api("POST", "Calls.json", [("To", ALICE), ("From", OURS), ("Url", app.url("/voice"))],
                           user=KEY_SID, password=KEY_SECRET)  # an API key authenticates too
        self.assertEqual(created[0], 201)
        sid = created[1]["sid"]
        self.assertRegex(sid, r"^CA[0-9a-f]{32}$")
        self.assertEqual(created[1]["status"], "queued")
        log = self.finish()
        self.assertEqual(seen, ["*", "1"])
        self.assertEqual([r["path"] for r in app.requests], ["/voice", "/ack", "/voice", "/ack"])
        first = app.requests[0]["params"]
        self.assertEqual((first["CallSid"], first["To"], first["From"], first["CallStatus"], first["Direction"]),
                         (sid, ALICE, OURS, "in-progress", "outbound-api"))
        self.assertEqual(len({r["token"] for r in app.requests}), 4, "one idempotency token per request")
        self.assertEqual(self.call(sid)["status"], "completed")
        presses = [e["digits"] for e in log["events"] if e["kind"] == "keypress"]
        self.assertEqual(presses, ["*", "1"])
        says = [e["text"] for e in log["events"] if e["kind"] == "verb" and e["verb"] == "Say"]
        self.assertEqual(says, ["1を押してください", "1を押してください", "acknowledged"])

    def test_no_answer_never_fetches_the_twiml(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""},
                         {"numbers": {ALICE: {"answer": "no-answer"}}})
        sid = self.place(ALICE, app, StatusCallback=app.url("/status"),
                         StatusCallbackEvent=["initiated", "ringing", "answered", "completed"], Timeout="20")["sid"]
        self.finish()
        self.assertEqual(app.at("/voice"), [])
        self.assertEqual([r["params"]["CallStatus"] for r in app.at("/status")], ["initiated", "ringing", "no-answer"])
        final = app.at("/status")[-1]["params"]
        self.assertEqual((final["CallDuration"], final["SipResponseCode"]), ("0", "487"))
        self.assertEqual(self.call(sid)["status"], "no-answer")

    def test_busy(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""}, {"numbers": {ALICE: {"answer": "busy"}}})
        sid = self.place(ALICE, app, StatusCallback=app.url("/status"))["sid"]
        self.finish()
        self.assertEqual(app.at("/voice"), [])
        self.assertEqual([(r["params"]["CallStatus"], r["params"]["SipResponseCode"]) for r in app.at("/status")],
                         [("busy", "486")])
        self.assertEqual(self.call(sid)["status"], "busy")

    def test_machine_answers_with_machine_detection(self):
        routes = {"/voice": twiml('<Gather numDigits="1" action="/ack"><Say>press 1</Say></Gather><Hangup/>'),
                  "/ack": twiml("<Hangup/>"), "/status": ""}
        app = self.start(routes, {"numbers": {ALICE: {"answer": "machine", "keys": ["1"]}}})
        sid = self.place(ALICE, app, MachineDetection="Enable", StatusCallback=app.url("/status"),
                         StatusCallbackEvent=["answered", "completed"])["sid"]
        self.finish()
        self.assertEqual(app.at("/voice")[0]["params"].get("AnsweredBy"), "machine_start")
        self.assertEqual(app.at("/ack"), [], "a machine never presses a key")
        self.assertEqual([r["params"].get("AnsweredBy") for r in app.at("/status")], ["machine_start"] * 2)
        self.assertEqual(self.call(sid)["answered_by"], "machine_start")
        # A human with MachineDetection is reported as one; without it, AnsweredBy is absent.
        self.place(BOB, app, MachineDetection="Enable")
        self.place(CAROL, app)
        self.finish()
        by_to = {r["params"]["To"]: r["params"].get("AnsweredBy") for r in app.at("/voice")}
        self.assertEqual((by_to[BOB], by_to[CAROL]), ("human", None))

    def test_inline_twiml_and_application_errors(self):
        app = self.start({"/ack": twiml("<Say>ok</Say>"), "/notxml": "<html>oops</html>"},
                         {"numbers": {ALICE: {"keys": ["1"]}, BOB: {"keys": ["1"]}}})
        inline = twiml(f'<Gather numDigits="1" action="{app.url("/ack")}"><Say>inline</Say></Gather>')
        status, body = self.api("POST", "Calls.json", [("To", ALICE), ("From", OURS), ("Twiml", inline)])
        self.assertEqual(status, 201, body)
        # A relative action in inline TwiML has no document URL to resolve against.
        relative = twiml('<Gather numDigits="1" action="/ack"><Say>inline</Say></Gather>')
        self.assertEqual(self.api("POST", "Calls.json", [("To", BOB), ("From", OURS), ("Twiml", relative)])[0], 201)
        self.place(CAROL, app, voice="/missing")   # 404: Twilio's application error
        self.place(CAROL, app, voice="/notxml")    # not TwiML
        log = self.finish()
        self.assertEqual(len(app.at("/ack")), 1)
        self.assertEqual(app.at("/ack")[0]["params"]["To"], ALICE)
        errors = [e["message"] for e in log["events"] if e["kind"] == "error"]
        self.assertEqual(len(errors), 3, errors)
        self.assertEqual(sum("relative URL" in e for e in errors), 1, errors)
        self.assertEqual(sum("answered 404" in e for e in errors), 1, errors)
        self.assertEqual(sum("12100" in e for e in errors), 1, errors)
        self.assertEqual(sorted(c["status"] for c in log["calls"]), ["completed"] * 4)

    def test_record_posts_the_recording_to_its_action(self):
        app = self.start({"/voice": twiml('<Say>after the beep</Say><Record action="rec" maxLength="30"/>'),
                          "/rec": twiml("<Say>thanks</Say>")},
                         {"numbers": {ALICE: {"record_seconds": 12}}})
        self.place(ALICE, app)
        self.finish()
        rec = app.at("/rec")  # the relative action resolved against the document's URL
        self.assertEqual(len(rec), 1)
        p = rec[0]["params"]
        self.assertEqual(p["RecordingDuration"], "12")
        self.assertRegex(p["RecordingSid"], r"^RE[0-9a-f]{32}$")
        self.assertTrue(p["RecordingUrl"].endswith("/Recordings/" + p["RecordingSid"]))
        self.assertEqual(p["Digits"], "#")
        # maxLength caps it, and a hang-up ends it with Digits=hangup.
        self.sim.numbers[BOB] = {"record_seconds": 99, "hangup_after_record": True}
        self.place(BOB, app)
        self.finish()
        p = app.at("/rec")[1]["params"]
        self.assertEqual((p["RecordingDuration"], p["Digits"]), ("30", "hangup"))


class CallerBehaviour(SimTest):
    def test_hangs_up_after_n_gathers(self):
        loop = twiml('<Gather numDigits="1" action="/ack"><Say>press 1</Say></Gather><Redirect>/voice</Redirect>')
        app = self.start({"/voice": loop, "/ack": twiml("<Hangup/>")},
                         {"numbers": {ALICE: {"keys": [None, None, "1"], "hangup_after_gathers": 2}}})
        sid = self.place(ALICE, app)["sid"]
        log = self.finish()
        self.assertEqual(len(app.at("/voice")), 3, "heard Gathers 1 and 2, hung up at the third")
        self.assertEqual(app.at("/ack"), [])
        self.assertEqual(self.call(sid)["status"], "completed")
        self.assertEqual([e for e in log["events"] if e["kind"] == "keypress"], [])

    def test_time_limit_and_duration_cut_the_call(self):
        app = self.start({"/voice": twiml('<Pause length="100"/><Say>never heard</Say>')},
                         {"numbers": {BOB: {"duration": 30}}})
        a = self.place(ALICE, app, TimeLimit="12")["sid"]
        b = self.place(BOB, app)["sid"]
        log = self.finish()
        self.assertEqual((self.call(a)["duration"], self.call(b)["duration"]), ("12", "30"))
        self.assertEqual([e for e in log["events"] if e["kind"] == "verb" and e["verb"] == "Say"], [])

    def test_end_an_in_progress_call_through_the_api(self):
        app = self.start({"/voice": twiml('<Pause length="600"/><Say>after the pause</Say>')}, {"time_scale": 0.05})
        sid = self.place(ALICE, app)["sid"]
        for _ in range(200):
            if self.call(sid)["status"] == "in-progress":
                break
            threading.Event().wait(0.02)
        self.assertEqual(self.api("POST", f"Calls/{sid}.json", [("Status", "canceled")])[1]["status"],
                         "in-progress", "canceled does not end a call in progress")
        status, body = self.api("POST", f"Calls/{sid}.json", [("Status", "completed")])
        self.assertEqual((status, body["status"]), (200, "completed"))
        self.assertTrue(self.sim.wait_idle(2), "the 30 s pause was cut short")
        log = self.finish()
        self.assertEqual([e for e in log["events"] if e["kind"] == "verb" and e["verb"] == "Say"], [])

    def test_get_actions_are_signed_over_the_query(self):
        app = self.start({"/voice": twiml('<Gather numDigits="1" action="/menu?step=2" method="GET"/>'),
                          "/menu": twiml("<Hangup/>")}, {"numbers": {ALICE: {"keys": ["7"]}}})
        self.place(ALICE, app)
        self.finish()  # checks every signature, this GET's over its full query too
        got = app.at("/menu")
        self.assertEqual((got[0]["method"], got[0]["params"]["Digits"], got[0]["params"]["step"]), ("GET", "7", "2"))


    def test_hesitating_keys_and_keys_too_late(self):
        app = self.start({"/voice": twiml('<Gather numDigits="1" action="/ack" timeout="5"><Say>press 1</Say></Gather>',
                                          "<Say>nothing pressed</Say>"),
                          "/ack": twiml("<Say>ok</Say>")},
                         {"numbers": {ALICE: {"keys": [{"digits": "1", "after": 4}]},
                                      BOB: {"keys": [{"digits": "1", "after": 5}]}}})
        a = self.place(ALICE, app)["sid"]
        b = self.place(BOB, app)["sid"]
        self.finish()
        self.assertEqual([r["params"]["CallSid"] for r in app.at("/ack")], [a])
        self.assertNotIn(b, [r["params"]["CallSid"] for r in app.at("/ack")])

    def test_replay_sends_the_same_request_again(self):
        app = self.start({"/voice": twiml('<Gather numDigits="1" action="/ack"/>'), "/ack": twiml("<Hangup/>")},
                         {"numbers": {ALICE: {"keys": ["1"]}}})
        self.place(ALICE, app)
        log = self.finish()
        ack = [e for e in log["events"] if e["kind"] == "webhook" and e["purpose"] == "gather"][0]
        req = urllib.request.Request(self.sim.base_url + "/_sim/replay", data=json.dumps({"n": ack["n"]}).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            self.assertEqual(json.load(resp)["status"], 200)
        first, again = app.at("/ack")
        self.assertEqual((again["pairs"], again["token"], again["valid"]), (first["pairs"], first["token"], True))
        replayed = [e for e in self.sim.snapshot()["events"] if e.get("replay_of") == ack["n"]]
        self.assertEqual(replayed[0]["signature"], ack["signature"])


class StatusCallbacks(SimTest):
    EVENTS = ["initiated", "ringing", "answered", "completed"]

    def test_in_order_with_sequence_numbers(self):
        app = self.start({"/voice": twiml("<Say>hello there</Say><Pause length=\"4\"/>"), "/status": ""})
        sid = self.place(ALICE, app, StatusCallback=app.url("/status"), StatusCallbackEvent=self.EVENTS)["sid"]
        self.finish()
        got = [r["params"] for r in app.at("/status")]
        self.assertEqual([p["SequenceNumber"] for p in got], ["0", "1", "2", "3"])
        self.assertEqual([p["CallStatus"] for p in got], ["initiated", "ringing", "in-progress", "completed"])
        for p in got:
            self.assertEqual((p["CallSid"], p["AccountSid"], p["From"], p["To"], p["Direction"], p["ApiVersion"],
                              p["CallbackSource"]), (sid, ACCOUNT, OURS, ALICE, "outbound-api", "2010-04-01",
                                                     "call-progress-events"))
            self.assertTrue(p["Timestamp"].endswith("+0000"))
        self.assertGreaterEqual(int(got[-1]["CallDuration"]), 5)
        self.assertEqual(got[-1]["CallDuration"], self.call(sid)["duration"])
        self.assertEqual(got[-1]["SipResponseCode"], "200")

    def test_only_requested_events_plus_the_final_one(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""})
        self.place(ALICE, app, StatusCallback=app.url("/status"), StatusCallbackEvent=["answered"])
        self.place(BOB, app, StatusCallback=app.url("/status"))
        self.finish()
        by_to = {}
        for r in app.at("/status"):
            by_to.setdefault(r["params"]["To"], []).append(r["params"]["CallStatus"])
        self.assertEqual(by_to, {ALICE: ["in-progress", "completed"], BOB: ["completed"]})

    def test_out_of_order_option(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""}, {"callback_order": "reverse"})
        self.place(ALICE, app, StatusCallback=app.url("/status"), StatusCallbackEvent=self.EVENTS)
        self.finish()
        got = [r["params"] for r in app.at("/status")]
        self.assertEqual([p["SequenceNumber"] for p in got], ["3", "2", "1", "0"])
        ordered = sorted(got, key=lambda p: int(p["SequenceNumber"]))
        self.assertEqual([p["CallStatus"] for p in ordered], ["initiated", "ringing", "in-progress", "completed"])


class Forwarding(SimTest):
    """Issue 15: a screened forward, <Dial><Number url=...>."""

    def routes(self, dial_results):
        def screen(p):
            if p.get("Digits") == "1":
                return twiml()  # the whisper ends: the legs are bridged
            return twiml("<Hangup/>")

        def dial_result(p):
            dial_results.append(p)
            return twiml("<Say>voicemail</Say>" if p["DialCallStatus"] != "completed" else "<Hangup/>")

        return {
            "/voice": twiml(f'<Dial action="/dial-result" timeout="20"><Number url="whisper">{BOB}</Number></Dial>'),
            "/whisper": twiml('<Gather numDigits="1" action="/screen" timeout="5"><Say>call from 0 9 0. press 1</Say></Gather>',
                              "<Hangup/>"),
            "/screen": screen,
            "/dial-result": dial_result,
        }

    def test_whisper_refused_reports_no_answer_to_the_dial_action(self):
        results = []
        app = self.start(self.routes(results), {"numbers": {BOB: {"keys": ["2"]}}})
        parent = self.place(ALICE, app)["sid"]
        log = self.finish()
        whisper = app.at("/whisper")[0]["params"]
        self.assertEqual((whisper["ParentCallSid"], whisper["To"], whisper["Direction"]), (parent, BOB, "outbound-dial"))
        self.assertEqual(app.at("/screen")[0]["params"]["Digits"], "2")
        self.assertEqual(len(results), 1)
        self.assertEqual(results[0]["DialCallStatus"], "no-answer")
        self.assertEqual(results[0]["DialBridged"], "false")
        self.assertEqual(results[0]["DialCallSid"], whisper["CallSid"])
        self.assertEqual(results[0]["DialCallDuration"], "0")
        self.assertEqual(results[0]["CallSid"], parent)
        legs = [c for c in log["calls"] if c["parent_call_sid"] == parent]
        self.assertEqual([(c["to"], c["status"]) for c in legs], [(BOB, "completed")])

    def test_whisper_silent_also_refuses(self):
        results = []
        app = self.start(self.routes(results), {"numbers": {BOB: {"keys": [None]}}})
        self.place(ALICE, app)
        self.finish()
        self.assertEqual(app.at("/screen"), [])
        self.assertEqual([r["DialCallStatus"] for r in results], ["no-answer"])

    def test_whisper_accepted_bridges_the_call(self):
        results = []
        app = self.start(self.routes(results), {"numbers": {BOB: {"keys": ["1"], "duration": 42}}})
        parent = self.place(ALICE, app)["sid"]
        log = self.finish()
        self.assertEqual([(r["DialCallStatus"], r["DialBridged"]) for r in results], [("completed", "true")])
        leg = [c for c in log["calls"] if c["parent_call_sid"] == parent][0]
        self.assertEqual((results[0]["DialCallSid"], results[0]["DialCallDuration"]), (leg["sid"], leg["duration"]))
        # The leg's duration runs from its answer: the whisper, then 42 s of conversation.
        self.assertGreaterEqual(int(leg["duration"]), 42)
        # The caller was on the line through the ringing, the whisper and the conversation.
        self.assertGreater(int(self.call(parent)["duration"]), int(leg["duration"]))

    def test_unscreened_forward_to_a_voicemail_box_is_completed(self):
        """The defect issue 15 fixes: without screening, a carrier voicemail looks answered."""
        results = []
        routes = self.routes(results)
        routes["/voice"] = twiml(f'<Dial action="/dial-result"><Number>{BOB}</Number></Dial>')
        app = self.start(routes, {"numbers": {BOB: {"answer": "machine"}}})
        self.place(ALICE, app)
        self.finish()
        self.assertEqual([r["DialCallStatus"] for r in results], ["completed"])

    def test_forward_not_answered(self):
        results = []
        app = self.start(self.routes(results), {"numbers": {BOB: {"ring_seconds": 25}, CAROL: {"answer": "busy"}}})
        self.place(ALICE, app)
        self.finish()
        self.assertEqual(app.at("/whisper"), [])
        self.assertEqual([r["DialCallStatus"] for r in results], ["no-answer"])
        self.sim.numbers[BOB] = {"answer": "busy"}
        self.place(ALICE, app)
        self.finish()
        self.assertEqual([r["DialCallStatus"] for r in results], ["no-answer", "busy"])


class RestApi(SimTest):
    def test_bad_basic_auth_is_401_20003(self):
        app = self.start({"/voice": twiml()})
        form = [("To", ALICE), ("From", OURS), ("Url", app.url("/voice"))]
        for user, password in [(ACCOUNT, "wrong"), (KEY_SID, TOKEN), ("AC" + "c" * 32, TOKEN), (None, None)]:
            status, body = self.api("POST", "Calls.json", form, user=user, password=password)
            self.assertEqual((status, body["code"], body["status"]), (401, 20003, 401), (user, password))
            self.assertEqual(body["more_info"], "https://www.twilio.com/docs/errors/20003")
        # Good credentials on another account's path are refused too.
        url = f"{self.sim.base_url}/2010-04-01/Accounts/AC{'d' * 32}/Calls.json"
        req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode())
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual((e.exception.code, json.load(e.exception)["code"]), (401, 20003))
        log = self.finish()
        self.assertEqual(log["calls"], [], "no call was placed")
        self.assertEqual(app.requests, [])

    def test_list_filtered_by_to_and_start_time(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>")}, {"numbers": {CAROL: {"answer": "failed"}}})
        a1 = self.place(ALICE, app)["sid"]
        self.place(BOB, app)
        a2 = self.place(ALICE, app)["sid"]
        self.place(CAROL, app)  # never started: no StartTime
        self.finish()
        today = datetime.now(timezone.utc).date()
        tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)

        def listed(raw_query):
            status, body = self.api("GET", "Calls.json", raw_query=raw_query)
            self.assertEqual(status, 200, body)
            return [c["sid"] for c in body["calls"]]

        self.assertEqual(listed(f"To={urllib.parse.quote(ALICE)}"), [a2, a1])  # newest first
        self.assertEqual(listed(f"To={urllib.parse.quote(ALICE)}&StartTime>={today}"), [a2, a1])
        # twilio-python's spelling of the same filter: a parameter named "StartTime>"
        self.assertEqual(listed(urllib.parse.urlencode({"To": ALICE, "StartTime>": str(today)})), [a2, a1])
        self.assertEqual(listed(f"To={urllib.parse.quote(ALICE)}&StartTime>={tomorrow}"), [])
        self.assertEqual(listed(f"StartTime<={yesterday}"), [])
        self.assertEqual(len(listed(f"StartTime={today}")), 3)
        self.assertEqual(len(listed("")), 4)
        self.assertEqual(listed(f"To={urllib.parse.quote(CAROL)}&StartTime>={today}"), [])

    def test_cancel_a_queued_call(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""},
                         {"numbers": {ALICE: {"queue_seconds": 10}}})
        sid = self.place(ALICE, app, StatusCallback=app.url("/status"), StatusCallbackEvent=["initiated", "completed"])["sid"]
        self.assertEqual(self.call(sid)["status"], "queued")
        status, body = self.api("POST", f"Calls/{sid}.json", [("Status", "canceled")])
        self.assertEqual((status, body["status"]), (200, "canceled"))
        self.finish()
        self.assertEqual(app.at("/voice"), [])
        self.assertEqual([r["params"]["CallStatus"] for r in app.at("/status")], ["canceled"])
        # canceled does not touch a call that has ended; an unknown SID is 404 20404.
        self.assertEqual(self.api("POST", f"Calls/{sid}.json", [("Status", "canceled")])[1]["status"], "canceled")
        status, body = self.api("POST", f"Calls/CA{'0' * 32}.json", [("Status", "canceled")])
        self.assertEqual((status, body["code"]), (404, 20404))

    def test_refusals_are_twilio_error_documents(self):
        app = self.start({"/voice": twiml()}, {"numbers": {BOB: {"api_error": {"code": 21215, "message": "geo"}}}})
        cases = [([("To", "090-1111-2222"), ("From", OURS), ("Url", app.url("/voice"))], 21211),
                 ([("From", OURS), ("Url", app.url("/voice"))], 21201),
                 ([("To", ALICE), ("From", OURS)], 21205),
                 ([("To", ALICE), ("From", OURS), ("Url", app.url("/voice")),
                   ("StatusCallbackEvent", "initiated,completed")], 21626),
                 ([("To", BOB), ("From", OURS), ("Url", app.url("/voice"))], 21215)]
        for form, code in cases:
            status, body = self.api("POST", "Calls.json", form)
            self.assertEqual((status, body["code"]), (400, code), form)
        self.assertEqual(self.finish()["calls"], [])


    def test_scripted_faults_429_then_201_and_500_after_the_call_exists(self):
        app = self.start({"/voice": twiml("<Say>hi</Say>")}, {"numbers": {
            ALICE: {"api_error": [{"status": 429, "code": 20429, "message": "Too Many Requests"}, None]},
            BOB: {"api_error": {"status": 500, "code": 20500, "message": "Internal Server Error", "create": True}},
        }})
        form = [("To", ALICE), ("From", OURS), ("Url", app.url("/voice"))]
        self.assertEqual(self.api("POST", "Calls.json", form)[1]["code"], 20429)
        self.assertEqual(self.api("POST", "Calls.json", form)[0], 201)
        self.assertEqual(self.api("POST", "Calls.json", form)[0], 201)
        status, body = self.api("POST", "Calls.json", [("To", BOB), ("From", OURS), ("Url", app.url("/voice"))])
        self.assertEqual((status, body["code"]), (500, 20500))
        self.finish()
        # The 500 hid a call that exists: the Calls list finds it (how issue 13 resolves OutcomeUnknown).
        listed = self.api("GET", "Calls.json", raw_query="To=" + urllib.parse.quote(BOB))[1]["calls"]
        self.assertEqual([c["status"] for c in listed], ["completed"])
        self.assertEqual(len(app.at("/voice")), 3)


class InboundAndWiring(SimTest):
    def test_inbound_call_follows_the_menu(self):
        app = self.start({
            "/voice": twiml('<Gather numDigits="1" action="/menu"><Say>menu</Say></Gather><Say>bye</Say>'),
            "/menu": lambda p: twiml(f"<Say>you chose {p['Digits']}</Say>"),
        })
        call = self.sim.play_inbound(app.url("/voice"), ALICE, OURS, keys=["2"])
        self.finish()
        self.assertEqual(call.status, "completed")
        first = app.at("/voice")[0]["params"]
        self.assertEqual((first["CallStatus"], first["Direction"], first["From"], first["To"]),
                         ("ringing", "inbound", ALICE, OURS))
        self.assertEqual(app.at("/menu")[0]["params"]["CallStatus"], "in-progress")
        self.assertEqual(app.at("/menu")[0]["params"]["Digits"], "2")

    def test_inbound_reject_is_not_answered(self):
        app = self.start({"/voice": twiml('<Reject reason="busy"/>')})
        call = self.sim.play_inbound(app.url("/voice"), ALICE, OURS)
        self.finish()
        self.assertEqual((call.status, call.duration), ("busy", 0))

    def test_inbound_command_line(self):
        """`make dev`'s way: play one incoming call, standalone or through a running server."""
        app = self.start({"/voice": twiml('<Gather numDigits="1" action="/menu"><Say>menu</Say></Gather>'),
                          "/menu": lambda p: twiml(f"<Say>chose {p['Digits']}</Say>")})
        common = ["--url", app.url("/voice"), "--from", ALICE, "--to", OURS, "--keys", "3"]
        r = subprocess.run([sys.executable, SIM_PATH, "inbound", "--token", TOKEN, *common],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Gather: pressed '3'", r.stdout)
        self.assertTrue(r.stdout.rstrip().endswith("call ended: completed"))
        r = subprocess.run([sys.executable, SIM_PATH, "inbound", "--sim", self.sim.base_url, *common],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        log = self.finish()
        self.assertEqual([(c["direction"], c["from"], c["status"]) for c in log["calls"]],
                         [("inbound", ALICE, "completed")])
        self.assertEqual([r["params"]["Digits"] for r in app.at("/menu")], ["3", "3"])

    def test_https_urls_signed_as_given_delivered_over_http(self):
        """What `make dev` and the Rust tests need: https:// callbacks served on loopback http."""
        app = self.start({"/voice": twiml("<Say>hi</Say>"), "/status": ""}, {"plain_http": True},
                         public_scheme="https")
        self.place(ALICE, app, StatusCallback=app.url("/status"))
        log = self.finish()
        self.assertEqual(len(app.requests), 2)
        sent = [e for e in log["events"] if e["kind"] == "webhook"]
        self.assertTrue(all(e["url"].startswith("https://") and e["sent_to"].startswith("http://") for e in sent))

    def test_url_map_signs_the_public_url_and_delivers_to_the_mapped_one(self):
        app = WebhookApp({"/prefix/voice": twiml("<Say>hi</Say>")}, public_scheme="https")
        app.base = "https://voice.example.com"  # what the app believes Twilio calls (PUBLIC_BASE_URL)
        self.apps.append(app)
        self.start({}, {"url_map": {"https://voice.example.com/": f"http://127.0.0.1:{app.port}/"}})
        self.place(ALICE, app, voice="/prefix/voice")
        log = self.finish()
        self.assertEqual([r["path"] for r in app.requests], ["/prefix/voice"])
        sent = [e for e in log["events"] if e["kind"] == "webhook"][0]
        self.assertEqual((sent["url"], sent["sent_to"]),
                         ("https://voice.example.com/prefix/voice", f"http://127.0.0.1:{app.port}/prefix/voice"))

    def test_child_process_with_config_file_port_line_and_log(self):
        """The way a Rust test drives it: config file, port from the first line, the JSON log."""
        app = WebhookApp({"/voice": twiml('<Gather numDigits="1" action="/ack"><Say>press</Say></Gather>'),
                          "/ack": twiml("<Hangup/>")})
        self.apps.append(app)
        config = os.path.join(self.tmp.name, "sim.json")
        with open(config, "w") as f:
            json.dump({"account_sid": ACCOUNT, "auth_token": TOKEN, "numbers": {ALICE: {"keys": ["1"]}}}, f)
        proc = subprocess.Popen([sys.executable, SIM_PATH, "serve", "--config", config, "--port", "0",
                                 "--log", self.log_path], stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            self.assertRegex(first, r"^twilio-sim listening on http://127\.0\.0\.1:\d+$")
            port = int(first.rsplit(":", 1)[1])
            self.sim = None
            url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
            req = urllib.request.Request(url, method="POST", data=urllib.parse.urlencode(
                [("To", ALICE), ("From", OURS), ("Url", app.url("/voice"))]).encode())
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode())
            with urllib.request.urlopen(req, timeout=10) as resp:
                sid = json.load(resp)["sid"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/wait?timeout=10", timeout=15) as resp:
                self.assertEqual(json.load(resp), {"idle": True})
            with open(self.log_path, encoding="utf-8") as f:
                log = json.load(f)
            self.assertEqual([(c["sid"], c["to"], c["status"]) for c in log["calls"]], [(sid, ALICE, "completed")])
            api = [e for e in log["events"] if e["kind"] == "api"]
            self.assertEqual([(e["method"], e["status"], dict(e["form"])["To"]) for e in api], [("POST", 201, ALICE)])
            self.assertEqual([e["digits"] for e in log["events"] if e["kind"] == "keypress"], ["1"])
        finally:
            proc.terminate()
            out = proc.communicate(timeout=10)[0]
        self.assertIn("+81********22", out)  # stdout masks phone numbers like phone::mask
        self.assertNotIn(ALICE, out)
        self.assertIn("Gather: pressed '1'", out)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
