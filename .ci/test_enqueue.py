#!/usr/bin/env python3
"""`make enqueue` against moto (in process): every call event of a file arrives as one message,
in batches of ten; a file with a bad line sends nothing.

usage: .venv/bin/python .ci/test_enqueue.py
"""

import json
import os
import sys
import tempfile

os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="ap-northeast-1")
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enqueue  # noqa: E402

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def write(lines):
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
    f.write("\n".join(lines) + "\n")
    f.close()
    return f.name


def drain(sqs, url):
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


@mock_aws
def main():
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    url = sqs.create_queue(QueueName="bulk-calls")["QueueUrl"]
    events = [{"to": "+8131234%04d" % i, "say": "テストです", "idempotency_key": f"drill-{i}"} for i in range(23)]
    good = write(["# the morning drill", ""] + [json.dumps(e, ensure_ascii=False) for e in events])
    rc = enqueue.main(["--queue-url", url, good])
    check("a good file is sent", rc == 0, rc)
    got = drain(sqs, url)
    check("every line is one message, unchanged", sorted(got, key=lambda e: e["idempotency_key"]) == sorted(events, key=lambda e: e["idempotency_key"]), got)

    bad = write([json.dumps(events[0]), "[1, 2]", json.dumps(events[1])])
    rc = enqueue.main(["--queue-url", url, bad])
    check("a file with a non-object line is refused", rc == 2, rc)
    check("nothing of a refused file is sent", drain(sqs, url) == [])
    bad = write([json.dumps(events[0]), "{not json"])
    check("a file with a line that is not JSON is refused", enqueue.main(["--queue-url", url, bad]) == 2)
    check("nothing of it is sent", drain(sqs, url) == [])
    for path in (good, bad):
        os.unlink(path)

    failed = results.count(False)
    print(f"enqueue: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
