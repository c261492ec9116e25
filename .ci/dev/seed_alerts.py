#!/usr/bin/env python3
"""Creates on the local moto_server what template.yaml creates for phone alerts: the escalation
state machine from statemachine/alert-escalation.asl.json (its substitutions: the bulk-calls
queue, the default bus, our event source) and the escalation policies in SSM (two dev contacts,
one round, short waits). Prints the state machine's ARN on the last line.
usage: seed_alerts.py ENDPOINT BULK_QUEUE POLICIES_PARAMETER"""

import json
import pathlib
import sys

import boto3

endpoint, bulk_queue, parameter = sys.argv[1:4]
root = pathlib.Path(__file__).resolve().parents[2]
session = boto3.session.Session(region_name="ap-northeast-1",
                                aws_access_key_id="dev", aws_secret_access_key="dev")
client = lambda name: session.client(name, endpoint_url=endpoint)  # noqa: E731
sqs, sfn, ssm = client("sqs"), client("stepfunctions"), client("ssm")

queue_url = sqs.get_queue_url(QueueName=bulk_queue)["QueueUrl"]
definition = ((root / "statemachine/alert-escalation.asl.json").read_text()
              .replace("${AlertQueueUrl}", queue_url)
              .replace("${EventBusName}", "default")
              .replace("${EventSource}", "twilio-lambda-rs"))
arn = sfn.create_state_machine(name="twilio-lambda-rs-dev-alerts", definition=definition,
                               roleArn="arn:aws:iam::123456789012:role/dev-alerts")["stateMachineArn"]
policies = {"default": "oncall", "policies": {"oncall": {
    "contacts": [{"name": "山田", "number": "+819011110001"}, {"name": "佐藤", "number": "+819011110002"}],
    "rounds": 1, "round_delay_seconds": 5, "ring_timeout_seconds": 20, "step_timeout_seconds": 120,
    "language": "ja-JP", "voice": "Polly.Takumi", "max_prompts": 2}}}
ssm.put_parameter(Name=parameter, Type="String", Value=json.dumps(policies, ensure_ascii=False), Overwrite=True)
print(f"  stepfunctions: {arn} (policies in {parameter})")
print(arn)
