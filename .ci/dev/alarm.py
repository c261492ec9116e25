#!/usr/bin/env python3
"""`make alarm`: a CloudWatch alarm entering ALARM, run end to end on `make dev` (started with
DEV_TWILIO=sim, so that the Twilio simulator plays the callees): the alarm event goes to
outbound-call as the EventBridge rule would send it, this script plays the SQS event source
mapping of the bulk-calls queue (which carries the escalation's plan and call tasks), and prints
the simulator's lines (each call, what was said, each keypress) until the escalation ends, then
the event it published.
usage: alarm.py AWS_ENDPOINT LAMBDA_URL EVENT_FILE SIM_LOG BULK_QUEUE EVENTS_QUEUE"""

import datetime
import json
import sys
import time
import urllib.request

import boto3

aws, lambda_url, event_file, sim_log, bulk_queue, events_queue = sys.argv[1:7]
session = boto3.session.Session(region_name="ap-northeast-1",
                                aws_access_key_id="dev", aws_secret_access_key="dev")
sqs = session.client("sqs", endpoint_url=aws)
sfn = session.client("stepfunctions", endpoint_url=aws)
bulk = sqs.get_queue_url(QueueName=bulk_queue)["QueueUrl"]
bulk_arn = sqs.get_queue_attributes(QueueUrl=bulk, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
events = sqs.get_queue_url(QueueName=events_queue)["QueueUrl"]


def invoke(payload):
    request = urllib.request.Request(f"{lambda_url}/2015-03-31/functions/outbound-call/invocations",
                                     data=json.dumps(payload).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read() or b"null")


def pump():
    """One round of the event source mapping: receive, invoke, delete what was not reported."""
    messages = sqs.receive_message(QueueUrl=bulk, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if not messages:
        return
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {}, "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": bulk_arn, "awsRegion": "ap-northeast-1"}
               for m in messages]
    answer = invoke({"Records": records})
    failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=bulk, ReceiptHandle=m["ReceiptHandle"])


with open(event_file) as f:
    event = json.load(f)
# A new state change each time: a new escalation.
now = datetime.datetime.now(datetime.timezone.utc)
event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
event["detail"]["state"]["timestamp"] = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"

try:
    offset = open(sim_log, "rb").seek(0, 2)
except FileNotFoundError:
    sys.exit(f"!! {sim_log} is missing: start `make dev DEV_TWILIO=sim` first")
started = invoke(event)
print(f"== alarm {event['detail']['alarmName']} → {json.dumps(started, ensure_ascii=False)}")
arn = (started or {}).get("execution_arn")
if not arn:
    sys.exit("!! no escalation started")
deadline = time.time() + 600
status = "RUNNING"
while status == "RUNNING" and time.time() < deadline:
    pump()
    with open(sim_log, "rb") as f:
        f.seek(offset)
        chunk = f.read()
        offset += len(chunk)
    for line in chunk.decode(errors="replace").splitlines():
        print("   twilio:", line)
    status = sfn.describe_execution(executionArn=arn)["status"]
print(f"== escalation {status}")
time.sleep(1)
# Read without taking: `make dev-events` still lists them.
alert_id = started.get("alert_id")
for m in sqs.receive_message(QueueUrl=events, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                             VisibilityTimeout=0).get("Messages", []):
    envelope = json.loads(m["Body"])
    if envelope.get("detail-type", "").startswith("Alert ") and envelope["detail"].get("alert_id") == alert_id:
        print(f"== {envelope['detail-type']}: {json.dumps(envelope['detail'], ensure_ascii=False)}")
sys.exit(0 if status == "SUCCEEDED" else 1)
