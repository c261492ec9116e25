#!/usr/bin/env python3
"""Creates on the local moto_server what template.yaml creates in an account for the call ledger,
the events and bulk calls: the ledger table (string key `pk`, on demand), a rule on the default
bus sending every twilio-lambda-rs event to a queue you can read (the stack's SNS topic stands
there), and the bulk-calls queue with its dead-letter queue.
usage: seed_aws.py ENDPOINT TABLE EVENTS_QUEUE BULK_QUEUE"""

import json
import sys

import boto3

endpoint, table, events_queue, bulk_queue = sys.argv[1:5]
session = boto3.session.Session(region_name="ap-northeast-1",
                                aws_access_key_id="dev", aws_secret_access_key="dev")
client = lambda name: session.client(name, endpoint_url=endpoint)  # noqa: E731
ddb, sqs, events = client("dynamodb"), client("sqs"), client("events")

ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                 AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                 KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
print(f"  dynamodb: table {table}")


def queue(name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


_, dlq_arn = queue(f"{bulk_queue}-dlq")
bulk_url, _ = queue(bulk_queue, VisibilityTimeout="180",
                    RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}))
print(f"  sqs: bulk calls {bulk_url} (dead letters: {bulk_queue}-dlq)")
events_url, events_arn = queue(events_queue)
events.put_rule(Name="dev-events", EventBusName="default",
                EventPattern=json.dumps({"source": ["twilio-lambda-rs"]}))
events.put_targets(Rule="dev-events", EventBusName="default", Targets=[{"Id": "q", "Arn": events_arn}])
print(f"  events: every twilio-lambda-rs event on the default bus → {events_url}")
