#!/usr/bin/env python3
"""Points a Twilio number at the deployed stack: sets its VoiceUrl and StatusCallback (both POST)
through Twilio's IncomingPhoneNumbers API, with the URLs from the stack's outputs.

  wire_number.py --number +81501234567 [--stack-name twilio-voice] [--region ap-northeast-1]

Credentials: TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN from the environment, or else read from the
SSM parameters the stack uses (--account-sid-parameter, --auth-token-parameter). --voice-url and
--status-url skip the stack lookup. TWILIO_API_BASE_URL and AWS_ENDPOINT_URL point at stand-ins.
"""

import argparse
import base64
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3


def stack_outputs(stack, region):
    cfn = boto3.client("cloudformation", region_name=region)
    outputs = cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def credentials(args):
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if sid and token:
        return sid, token
    ssm = boto3.client("ssm", region_name=args.region)
    names = [args.account_sid_parameter, args.auth_token_parameter]
    found = ssm.get_parameters(Names=names, WithDecryption=True)
    if found["InvalidParameters"]:
        sys.exit(f"SSM parameter(s) not found: {', '.join(found['InvalidParameters'])}")
    values = {p["Name"]: p["Value"] for p in found["Parameters"]}
    return values[args.account_sid_parameter], values[args.auth_token_parameter]


def twilio(method, url, sid, token, form=None):
    data = urllib.parse.urlencode(form).encode() if form else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode())
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        sys.exit(f"Twilio answered {e.code} to {method} {urllib.parse.urlsplit(url).path}: {e.read().decode()[:500]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", required=True, help="the Twilio number, E.164")
    parser.add_argument("--stack-name", default="twilio-voice")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "ap-northeast-1"))
    parser.add_argument("--voice-url")
    parser.add_argument("--status-url")
    parser.add_argument("--account-sid-parameter", default="/twilio/account-sid")
    parser.add_argument("--auth-token-parameter", default="/twilio/auth-token")
    args = parser.parse_args()
    if not re.fullmatch(r"\+[1-9][0-9]{1,14}", args.number):
        sys.exit(f"--number must be E.164 (+ and digits), got {args.number!r}")

    voice_url, status_url = args.voice_url, args.status_url
    if not voice_url:
        outputs = stack_outputs(args.stack_name, args.region)
        voice_url, status_url = outputs["VoiceWebhookUrl"], status_url or outputs["StatusCallbackUrl"]
    for url in (voice_url, status_url):
        if url and not url.startswith("https://"):
            sys.exit(f"webhook URLs must be https://, got {url}")

    sid, token = credentials(args)
    base = os.environ.get("TWILIO_API_BASE_URL", "https://api.twilio.com").rstrip("/")
    numbers = f"{base}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers"
    found = twilio("GET", f"{numbers}.json?" + urllib.parse.urlencode({"PhoneNumber": args.number}), sid, token)
    matches = found.get("incoming_phone_numbers", [])
    if not matches:
        sys.exit(f"{args.number} is not a number of account {sid[:6]}…")
    number_sid = matches[0]["sid"]
    form = {"VoiceUrl": voice_url, "VoiceMethod": "POST"}
    if status_url:
        form.update({"StatusCallback": status_url, "StatusCallbackMethod": "POST"})
    updated = twilio("POST", f"{numbers}/{number_sid}.json", sid, token, form)
    print(f"{number_sid}: voice_url={updated.get('voice_url')} status_callback={updated.get('status_callback')}")


if __name__ == "__main__":
    main()
