#!/usr/bin/env python3
"""Seeds the local SSM (moto_server) with the development parameters, as `aws ssm put-parameter`
would in a real account. usage: seed_ssm.py ENDPOINT PREFIX CALL_FLOW_FILE"""

import sys

import boto3

endpoint, prefix, flow_file = sys.argv[1:4]
ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="ap-northeast-1",
                   aws_access_key_id="dev", aws_secret_access_key="dev")
with open(flow_file, encoding="utf-8") as f:
    flow = f.read()
parameters = {
    "account-sid": ("AC0123456789abcdef0123456789abcdef", "SecureString"),
    # The documented development token: the events in events/ are signed with it.
    "auth-token": ("0123456789abcdef0123456789abcdef", "SecureString"),
    "call-flow": (flow, "String"),
}
for name, (value, kind) in parameters.items():
    ssm.put_parameter(Name=f"{prefix}/{name}", Value=value, Type=kind, Overwrite=True)
    print(f"  ssm: {prefix}/{name} ({kind})")
