"""The Python peer: the same incoming-call webhook as users would write it with the official
`twilio` package and boto3, run under `awslambdaric`. `make bench` measures it beside ours.

It does what ours does on the answer route: reads the auth token from SSM at start-up, checks
X-Twilio-Signature on the URL Twilio signed, and answers with the TwiML of bench/call-flow.json
(greeting, then a menu: the same at any hour, unlike `make dev`'s flow with its schedule). The
bench checks that both answer with the same TwiML."""

import base64
import os
from urllib.parse import parse_qsl

import boto3
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

LANGUAGE = "ja-JP"
VOICE = "Polly.Mizuki"
GREETING = "お電話ありがとうございます。こちらは開発環境です。"
PROMPT = "担当者におつなぎする場合は1を、メッセージを残す場合は2を、営業時間のご案内は3を押してください。"

_ssm = boto3.client("ssm")
_token = _ssm.get_parameter(Name=os.environ["TWILIO_AUTH_TOKEN_PARAMETER"], WithDecryption=True)
validator = RequestValidator(_token["Parameter"]["Value"])


def answer(base):
    response = VoiceResponse()
    response.say(GREETING, language=LANGUAGE, voice=VOICE)
    menu = f"{base}/menu?at=0m&tries=0"
    gather = Gather(input="dtmf", action=menu, method="POST", timeout=5, num_digits=1,
                    finish_on_key="")
    gather.say(PROMPT, language=LANGUAGE, voice=VOICE)
    response.append(gather)
    # No key: back to the menu's route, which counts the try and says goodbye after the last.
    response.redirect(menu, method="POST")
    return str(response)


def handler(event, context):
    headers = event.get("headers") or {}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    base = "https://" + headers["host"]
    url = base + event["rawPath"]
    if event.get("rawQueryString"):
        url += "?" + event["rawQueryString"]
    params = dict(parse_qsl(body, keep_blank_values=True))
    if not validator.validate(url, params, headers.get("x-twilio-signature", "")):
        return {"statusCode": 403, "body": "Forbidden"}
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/xml; charset=utf-8"},
        "body": answer(base),
    }
