#!/usr/bin/env python3
"""Prints the domain events `make dev` has published so far, one JSON object a line (the
queue a rule on the default bus fills), and takes them off the queue.
usage: events.py ENDPOINT QUEUE_NAME"""

import sys

import boto3

endpoint, name = sys.argv[1:3]
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="ap-northeast-1",
                   aws_access_key_id="dev", aws_secret_access_key="dev")
url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
while True:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    if not messages:
        break
    for message in messages:
        print(message["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
