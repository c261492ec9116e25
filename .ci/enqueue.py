#!/usr/bin/env python3
"""Queues bulk calls: each line of FILE is one call event (the JSON outbound-call takes; blank
lines and lines starting with # are skipped), sent to the bulk-calls queue with SendMessageBatch,
ten at a time.

A file with any line that is not a JSON object is refused whole, naming the line: nothing is
sent. Each message's ID is its idempotency key unless the event carries `idempotency_key`, so
running the same file twice places its calls twice; give each line a key to make a rerun safe.

usage: .venv/bin/python .ci/enqueue.py (--queue-url URL | --stack NAME) FILE
The queue is --queue-url, or the BulkCallsQueueUrl output of the CloudFormation stack NAME.
AWS_ENDPOINT_URL points both at a local stand-in (moto under `make dev`).
"""

import argparse
import json
import os
import sys

import boto3


def read_events(path):
    """[(line number, body)] or raises ValueError naming the first bad line."""
    events = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                event = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e})") from None
            if not isinstance(event, dict):
                raise ValueError(f"{path}:{number}: a call event is a JSON object")
            events.append((number, json.dumps(event, ensure_ascii=False, separators=(",", ":"))))
    return events


def stack_queue_url(session, stack):
    outputs = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    for output in outputs:
        if output["OutputKey"] == "BulkCallsQueueUrl":
            return output["OutputValue"]
    raise SystemExit(f"stack {stack} has no BulkCallsQueueUrl output")


def enqueue(sqs, queue_url, events):
    """Sends every event; returns the line numbers SQS did not accept."""
    refused = []
    for start in range(0, len(events), 10):
        batch = events[start:start + 10]
        answer = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(number), "MessageBody": body} for number, body in batch],
        )
        refused += [int(f["Id"]) for f in answer.get("Failed", [])]
    return refused


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--queue-url")
    where.add_argument("--stack")
    parser.add_argument("file")
    args = parser.parse_args(argv)

    try:
        events = read_events(args.file)
    except (OSError, ValueError) as e:
        print(f"enqueue: {e}; nothing sent", file=sys.stderr)
        return 2
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "ap-northeast-1"
    session = boto3.session.Session(region_name=region)
    queue_url = args.queue_url or stack_queue_url(session, args.stack)
    refused = enqueue(session.client("sqs"), queue_url, events)
    print(f"enqueued {len(events) - len(refused)} of {len(events)} calls")
    if refused:
        print(f"enqueue: SQS refused lines {refused}; send them again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
