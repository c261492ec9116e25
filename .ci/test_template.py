#!/usr/bin/env python3
"""Asserts the security-relevant shape of template.yaml, on the CloudFormation that SAM's own
translator makes of it (what would really be deployed), for the default parameters and for the
optional ones (previous token, API key, KMS key, schedule, call flow, phone alerts) all set.

usage: .venv-iac/bin/python .ci/test_template.py [template.yaml]
"""

import copy
import json
import sys

import os

from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

PSEUDO = {
    "AWS::Region": "ap-northeast-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "twilio-voice",
    "AWS::StackId": "arn:aws:cloudformation:ap-northeast-1:123456789012:stack/twilio-voice/x",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}
ALL_OPTIONS = {
    "PreviousAuthTokenParameterName": "/twilio/previous-auth-token",
    "ApiKeySidParameterName": "/twilio/api-key-sid",
    "ApiKeySecretParameterName": "/twilio/api-key-secret",
    "KmsKeyArn": "arn:aws:kms:ap-northeast-1:123456789012:key/0f0f0f0f-0000-4000-8000-000000000000",
    "CallFlowParameterName": "/twilio/call-flow",
    "ScheduleExpression": "cron(0 9 ? * MON-FRI *)",
    "NotificationEmail": "oncall@example.com",
    "EscalationPoliciesParameterName": "/twilio/escalation-policies",
    # Alerts need a caller number (the template's Rules say so).
    "FromNumber": "+815012345678",
    # A new account (concurrency quota 10) cannot reserve any: empty means no reservation.
    "IncomingCallReservedConcurrency": "",
    "OutboundCallReservedConcurrency": "",
}
PHYSICAL_NAME = {
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::ApiGatewayV2::Api": "Name",
}
RESERVED = {
    "IncomingCallFunction": "IncomingCallReservedConcurrency",
    "OutboundCallFunction": "OutboundCallReservedConcurrency",
}


class ManagedPolicies:
    """SAM resolves managed policy names through IAM; offline, the ones it asks for are here."""

    def load(self):
        return {
            "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        }


results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def of_type(resources, kind):
    return {k: v for k, v in resources.items() if v["Type"] == kind}


NO_VALUE = object()


class Resolver:
    """Evaluates Ref, Fn::Sub, Fn::If and the template's Conditions for one set of parameter
    values, so each check sees what that deployment would get."""

    def __init__(self, params, conditions):
        self.params = params
        self.conditions = {}
        for name, expr in conditions.items():
            self.conditions[name] = self.condition(expr)

    def condition(self, expr):
        if isinstance(expr, dict) and "Condition" in expr:
            return self.conditions[expr["Condition"]]
        (fn, args), = expr.items()
        if fn == "Fn::Equals":
            return self.value(args[0]) == self.value(args[1])
        if fn == "Fn::Not":
            return not self.condition(args[0])
        if fn == "Fn::And":
            return all(self.condition(a) for a in args)
        if fn == "Fn::Or":
            return any(self.condition(a) for a in args)
        raise ValueError(fn)

    def value(self, node):
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, args), = node.items()
            if fn == "Ref":
                if args == "AWS::NoValue":
                    return NO_VALUE
                return self.params.get(args, {"Ref": args})
            if fn == "Fn::If":
                return self.value(args[1] if self.conditions[args[0]] else args[2])
            if fn == "Fn::Sub" and isinstance(args, str):
                out = args
                for k, v in self.params.items():
                    if isinstance(v, str):
                        out = out.replace("${" + k + "}", v)
                return out
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}


def statements(role):
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def as_list(x):
    return x if isinstance(x, list) else [x]


def check_samconfig(source):
    """samconfig.toml's overrides parse with SAM's own parser, name every template parameter, and
    fit each parameter's constraints, so `sam deploy` works the first time."""
    import re
    import tomllib

    from samcli.cli.types import CfnParameterOverridesType

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samconfig.toml"), "rb") as f:
        config = tomllib.load(f)
    overrides = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    try:
        values = CfnParameterOverridesType().convert(overrides, None, None)
    except Exception as e:  # click.BadParameter
        check("samconfig.toml overrides parse with SAM's parser", False, e)
        return
    params = source["Parameters"]
    check("samconfig.toml shows every template parameter", set(values) == set(params), set(params) ^ set(values))
    for name, value in values.items():
        spec = params.get(name, {})
        ok = True
        if "AllowedPattern" in spec:
            ok = re.fullmatch(spec["AllowedPattern"], value) is not None
        if "AllowedValues" in spec:
            ok = ok and value in [str(v) for v in spec["AllowedValues"]]
        check(f"samconfig.toml {name} fits the template's constraints", ok, value)
    input_json = values.get("ScheduleInput")
    try:
        json.loads(input_json)
        parsed = True
    except (TypeError, ValueError):
        parsed = False
    check("samconfig.toml ScheduleInput is JSON", parsed, input_json)


def check_ledger(res, overrides, conditions):
    """The call ledger's table, the notifications of call outcomes and the bulk-call queues
    (issue 13), as one deployment would get them."""
    tables = of_type(res, "AWS::DynamoDB::Table")
    check("one DynamoDB table, the call ledger", list(tables) == ["CallLedgerTable"], list(tables))
    table = tables.get("CallLedgerTable", {}).get("Properties", {})
    check("ledger table is on demand", table.get("BillingMode") == "PAY_PER_REQUEST", table)
    check("ledger key is the string pk alone",
          table.get("KeySchema") == [{"AttributeName": "pk", "KeyType": "HASH"}]
          and table.get("AttributeDefinitions") == [{"AttributeName": "pk", "AttributeType": "S"}], table)
    check("ledger items expire by TTL on expires_at",
          table.get("TimeToLiveSpecification") == {"AttributeName": "expires_at", "Enabled": True}, table)
    check("ledger has point-in-time recovery",
          table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True, table)

    topics = of_type(res, "AWS::SNS::Topic")
    check("one SNS topic for call notifications", list(topics) == ["CallNotificationsTopic"], list(topics))
    subs = [s["Properties"] for s in of_type(res, "AWS::SNS::Subscription").values()
            if conditions.get(s.get("Condition"), True)]
    want = [{"TopicArn": {"Ref": "CallNotificationsTopic"}, "Protocol": "email", "Endpoint": overrides["NotificationEmail"]}] \
        if overrides.get("NotificationEmail") else []
    check("an e-mail subscription exactly when NotificationEmail is set", subs == want, subs)

    rules = of_type(res, "AWS::Events::Rule")
    rule = rules.get("CallNotificationsRule", {}).get("Properties", {})
    pattern = rule.get("EventPattern", {})
    check("notifications rule matches only our events", pattern.get("source") == ["twilio-lambda-rs"], pattern)
    types = {t for alt in pattern.get("$or", []) for t in alt.get("detail-type", [])}
    check("notifications rule covers voicemails, failures and unanswered calls",
          types == {"Voicemail Recorded", "Voicemail Transcribed", "Call Failed", "Call Completed"}, pattern)
    answered = [alt for alt in pattern.get("$or", []) if alt.get("detail-type") == ["Call Completed"]]
    check("an answered call is not a notification",
          answered and "completed" not in answered[0].get("detail", {}).get("outcome", ["completed"]), answered)
    check("notifications rule targets the topic",
          [t["Arn"] for t in rule.get("Targets", [])] == [{"Ref": "CallNotificationsTopic"}], rule.get("Targets"))
    policies = [p["Properties"] for p in of_type(res, "AWS::SNS::TopicPolicy").values()]
    stmts = [st for p in policies for st in p["PolicyDocument"]["Statement"]]
    check("only the rule may publish to the topic (events.amazonaws.com, its ARN as source)",
          len(stmts) == 1 and stmts[0]["Principal"] == {"Service": "events.amazonaws.com"}
          and stmts[0]["Action"] == "sns:Publish"
          and stmts[0].get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn") == {"Fn::GetAtt": ["CallNotificationsRule", "Arn"]},
          stmts)

    queue = res.get("BulkCallsQueue", {}).get("Properties", {})
    redrive = queue.get("RedrivePolicy", {})
    check("bulk calls have a dead-letter queue",
          redrive.get("deadLetterTargetArn") == {"Fn::GetAtt": ["BulkCallsDeadLetterQueue", "Arn"]}
          and 1 <= redrive.get("maxReceiveCount", 0) <= 5, redrive)
    outbound_timeout = res.get("OutboundCallFunction", {}).get("Properties", {}).get("Timeout", 0)
    check("bulk calls stay invisible for 6 function timeouts", queue.get("VisibilityTimeout", 0) >= 6 * outbound_timeout, queue)
    for name in ("BulkCallsQueue", "BulkCallsDeadLetterQueue"):
        check(f"{name} is encrypted at rest", res.get(name, {}).get("Properties", {}).get("SqsManagedSseEnabled") is True)

    # The functions' wiring: settings, least privilege, the event source mapping, the schedule.
    table_arn = {"Fn::GetAtt": ["CallLedgerTable", "Arn"]}
    bus_arn = "arn:aws:events:ap-northeast-1:123456789012:event-bus/default"
    for fn, actions, prefixes in (
            ("OutboundCallFunction", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
             ["request#*", "call#*", "once#*"]),
            ("IncomingCallFunction", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
             ["call#*", "once#*", "request#alert:*"])):
        env = res.get(fn, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        check(f"{fn} knows the ledger table and the bus",
              env.get("CALL_LEDGER_TABLE") == {"Ref": "CallLedgerTable"} and env.get("EVENT_BUS_NAME") == "default", env)
        role = res.get(fn + "Role", {})
        stmts = list(statements(role)) if role else []
        ddb = [st for st in stmts if any(a.startswith("dynamodb:") for a in as_list(st["Action"]))]
        check(f"{fn}: DynamoDB only {actions} on the ledger table",
              len(ddb) == 1 and sorted(as_list(ddb[0]["Action"])) == actions and ddb[0]["Resource"] == table_arn, ddb)
        leading = [st.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys") for st in ddb]
        check(f"{fn}: only the ledger items it owns (dynamodb:LeadingKeys {prefixes})", leading == [prefixes], leading)
        events = [st for st in stmts if any(a.startswith("events:") for a in as_list(st["Action"]))]
        check(f"{fn}: events:PutEvents only, on the default bus, only our source",
              len(events) == 1 and as_list(events[0]["Action"]) == ["events:PutEvents"]
              and events[0]["Resource"] == bus_arn
              and events[0].get("Condition", {}).get("StringEquals", {}).get("events:source") == "twilio-lambda-rs", events)
    out_env = res.get("OutboundCallFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    check("outbound calls get incoming-call's /status as their status callback",
          "status" in json.dumps(out_env.get("STATUS_CALLBACK_URL")), out_env.get("STATUS_CALLBACK_URL"))
    out_stmts = list(statements(res.get("OutboundCallFunctionRole", {})))
    sqs = [st for st in out_stmts if any(a.startswith("sqs:") and a != "sqs:SendMessage" for a in as_list(st["Action"]))]
    check("outbound-call consumes only the bulk-calls queue",
          len(sqs) == 1 and sqs[0]["Resource"] == {"Fn::GetAtt": ["BulkCallsQueue", "Arn"]}, sqs)
    # SAM adds its own SendMessage on FailedCallsQueue for the OnFailure destination.
    sends = {(json.dumps(st["Resource"]), tuple(as_list(st["Action"]))) for st in out_stmts
             if "sqs:SendMessage" in as_list(st["Action"])}
    check("outbound-call sends only to the failed-calls queue and, its expiry messages, the bulk-calls queue",
          sends == {(json.dumps({"Fn::GetAtt": ["FailedCallsQueue", "Arn"]}), ("sqs:SendMessage",)),
                    (json.dumps({"Fn::GetAtt": ["BulkCallsQueue", "Arn"]}), ("sqs:SendMessage",))}, sends)
    check("outbound-call knows the bulk-calls queue's URL (expiry messages; required with the ledger)",
          out_env.get("BULK_CALLS_QUEUE_URL") == {"Ref": "BulkCallsQueue"}, out_env.get("BULK_CALLS_QUEUE_URL"))
    mappings = [m["Properties"] for m in of_type(res, "AWS::Lambda::EventSourceMapping").values()]
    check("one event source mapping, the bulk-calls queue into outbound-call",
          len(mappings) == 1 and mappings[0]["EventSourceArn"] == {"Fn::GetAtt": ["BulkCallsQueue", "Arn"]}
          and mappings[0]["FunctionName"] == {"Ref": "OutboundCallFunction"}, mappings)
    for m in mappings:
        check("only failed messages are redelivered (ReportBatchItemFailures)",
              m.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], m)
        check("consumers bounded, and the function paces for that many",
              m.get("ScalingConfig", {}).get("MaximumConcurrency") is not None
              and str(m["ScalingConfig"]["MaximumConcurrency"]) == str(out_env.get("BULK_MAX_CONCURRENCY")), (m, out_env))
        # A batch at the pace (one call per BulkMaxConcurrency / CallsPerSecond seconds, at the
        # defaults) plus the last call's 11 s attempt budget fits in the function's timeout.
        slowest = m["BatchSize"] * 2 / 1 + 11
        check("a batch at the default pace fits in the function's timeout", slowest <= outbound_timeout, slowest)
        check("outbound-call's start-up check knows the batch size and the timeout",
              str(out_env.get("BULK_BATCH_SIZE")) == str(m["BatchSize"])
              and str(out_env.get("FUNCTION_TIMEOUT_SECONDS")) == str(outbound_timeout), (m, out_env))
    schedules = of_type(res, "AWS::Scheduler::Schedule")
    for sched in schedules.values():
        raw = json.dumps(sched["Properties"]["Target"].get("Input"))
        check("the schedule's input carries its ARN and scheduled time (the idempotency key)",
              "<aws.scheduler.schedule-arn>" in raw and "<aws.scheduler.scheduled-time>" in raw, raw)


STATE_MACHINE = {"Ref": "AlertEscalationStateMachine"}
# The executions of the state machine (its Name is the stack's name and -alert-escalation).
EXECUTIONS = "arn:aws:states:ap-northeast-1:123456789012:execution:twilio-voice-alert-escalation:*"
# Log delivery to CloudWatch Logs accepts no resource but "*" (the only '*' allowed, and only here).
LOG_DELIVERY = sorted([
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
])


def check_alerts(res, overrides, source_rules):
    """Phone alerts (issue 14): the escalation state machine, who may end its steps, and the
    alarm rule, present exactly when EscalationPoliciesParameterName is set."""
    enabled = bool(overrides.get("EscalationPoliciesParameterName"))
    machines = of_type(res, "AWS::StepFunctions::StateMachine")
    env = {fn: res.get(fn, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
           for fn in ("IncomingCallFunction", "OutboundCallFunction")}
    states_stmts = {name: [st for st in statements(role) if any(a.startswith("states:") for a in as_list(st["Action"]))]
                    for name, role in of_type(res, "AWS::IAM::Role").items()}
    alarm_rules = {k: v for k, v in of_type(res, "AWS::Events::Rule").items()
                   if v["Properties"].get("EventPattern", {}).get("source") == ["aws.cloudwatch"]}
    if not enabled:
        check("alerts off: no state machine", not machines, list(machines))
        check("alerts off: no alarm rule", not alarm_rules, list(alarm_rules))
        check("alerts off: no role may touch Step Functions", not any(states_stmts.values()), states_stmts)
        check("alerts off: no alert settings",
              not any(k.startswith(("ALERT_", "ESCALATION_")) for e in env.values() for k in e), env)
        return

    check("alerts on: one state machine", list(machines) == ["AlertEscalationStateMachine"], list(machines))
    sm = machines.get("AlertEscalationStateMachine", {}).get("Properties", {})
    check("the state machine is STANDARD (waitForTaskToken needs it)", sm.get("StateMachineType") == "STANDARD", sm.get("StateMachineType"))
    check("the state machine is the ASL file in the repository", "DefinitionS3Location" in sm, list(sm))
    check("the ASL's substitutions: the bulk-calls queue, the default bus, our source",
          sm.get("DefinitionSubstitutions") == {"AlertQueueUrl": {"Ref": "BulkCallsQueue"}, "EventBusName": "default",
                                                "EventSource": "twilio-lambda-rs"}, sm.get("DefinitionSubstitutions"))
    logging = sm.get("LoggingConfiguration", {})
    check("the state machine logs, without execution data (task tokens, numbers)",
          logging.get("Level") in ("ALL", "ERROR", "FATAL") and logging.get("IncludeExecutionData") is False
          and logging.get("Destinations") == [{"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["AlertEscalationLogGroup", "Arn"]}}}],
          logging)
    check("the state machine is traced with X-Ray", sm.get("TracingConfiguration") == {"Enabled": True}, sm.get("TracingConfiguration"))
    role = res.get("AlertEscalationStateMachineRole", {})
    by_service = {}
    for st in statements(role):
        for a in as_list(st["Action"]):
            by_service.setdefault(a.split(":")[0], []).append((a, st["Resource"], st.get("Condition")))
    check("the state machine only sends to the bulk-calls queue, puts our events, delivers its logs",
          set(by_service) == {"sqs", "events", "logs"}, by_service)
    check("state machine: sqs:SendMessage on the bulk-calls queue only",
          by_service.get("sqs") == [("sqs:SendMessage", {"Fn::GetAtt": ["BulkCallsQueue", "Arn"]}, None)], by_service.get("sqs"))
    check("state machine: events:PutEvents on the default bus, our source only",
          by_service.get("events") == [("events:PutEvents", "arn:aws:events:ap-northeast-1:123456789012:event-bus/default",
                                        {"StringEquals": {"events:source": "twilio-lambda-rs"}})], by_service.get("events"))
    check("state machine: '*' only for the log-delivery actions",
          sorted(a for a, _, _ in by_service.get("logs", [])) == LOG_DELIVERY
          and all(r == "*" for _, r, _ in by_service.get("logs", [])), by_service.get("logs"))
    check("state machine: X-Ray write access", any("AWSXrayWriteOnlyAccess" in str(m) for m in role.get("Properties", {}).get("ManagedPolicyArns", [])),
          role.get("Properties", {}).get("ManagedPolicyArns"))

    for name, want in (("IncomingCallFunctionRole", ["states:SendTaskFailure", "states:SendTaskSuccess"]),
                       ("OutboundCallFunctionRole", ["states:ListExecutions", "states:SendTaskFailure", "states:SendTaskSuccess",
                                                     "states:StartExecution"])):
        got = [st for st in states_stmts.get(name, []) if st["Resource"] != EXECUTIONS]
        check(f"{name}: Step Functions {want} on this state machine only",
              sorted(a for st in got for a in as_list(st["Action"])) == want
              and all(st["Resource"] == STATE_MACHINE for st in got), got)
    described = {name: [st for st in sts if st["Resource"] == EXECUTIONS] for name, sts in states_stmts.items()}
    check("outbound-call alone may describe executions, of this state machine only",
          {n: [a for st in sts for a in as_list(st["Action"])] for n, sts in described.items() if sts}
          == {"OutboundCallFunctionRole": ["states:DescribeExecution"]}, described)
    others = [n for n, sts in states_stmts.items() if sts and n not in ("IncomingCallFunctionRole", "OutboundCallFunctionRole")]
    check("no other role may touch Step Functions", not others, others)
    check("incoming-call knows the state machine", env["IncomingCallFunction"].get("ALERT_STATE_MACHINE_ARN") == STATE_MACHINE, env["IncomingCallFunction"])
    out_env = env["OutboundCallFunction"]
    check("outbound-call knows the state machine and the policies",
          out_env.get("ALERT_STATE_MACHINE_ARN") == STATE_MACHINE
          and out_env.get("ESCALATION_POLICIES_PARAMETER") == overrides["EscalationPoliciesParameterName"], out_env)
    rule = source_rules.get("AlertsNeedACallerNumber", {})
    check("a stack with alerts and no FromNumber is refused before anything is created",
          rule.get("RuleCondition") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "EscalationPoliciesParameterName"}, ""]}]}
          and rule.get("Assertions", [{}])[0].get("Assert") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "FromNumber"}, ""]}]}, rule)

    check("one alarm rule", list(alarm_rules) == ["AlarmAlertsRule"], list(alarm_rules))
    rule = alarm_rules.get("AlarmAlertsRule", {}).get("Properties", {})
    check("the alarm rule takes alarms named with the opt-in prefix entering ALARM only",
          rule.get("EventPattern") == {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
                                       "detail": {"alarmName": [{"prefix": overrides.get("AlertAlarmNamePrefix", "page-")}],
                                                  "state": {"value": ["ALARM"]}}}, rule.get("EventPattern"))
    targets = rule.get("Targets", [])
    check("the alarm rule targets outbound-call, with a dead-letter queue",
          len(targets) == 1 and targets[0]["Arn"] == {"Fn::GetAtt": ["OutboundCallFunction", "Arn"]}
          and targets[0].get("DeadLetterConfig", {}).get("Arn") == {"Fn::GetAtt": ["AlarmAlertsDeadLetterQueue", "Arn"]}, targets)
    check("the alarm dead-letter queue is encrypted at rest",
          res.get("AlarmAlertsDeadLetterQueue", {}).get("Properties", {}).get("SqsManagedSseEnabled") is True)
    rule_arn = {"Fn::GetAtt": ["AlarmAlertsRule", "Arn"]}
    queue_policies = [st for p in of_type(res, "AWS::SQS::QueuePolicy").values() for st in p["Properties"]["PolicyDocument"]["Statement"]]
    check("only the alarm rule may send to its dead-letter queue",
          len(queue_policies) == 1 and queue_policies[0]["Principal"] == {"Service": "events.amazonaws.com"}
          and queue_policies[0].get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn") == rule_arn, queue_policies)
    perms = [p["Properties"] for p in of_type(res, "AWS::Lambda::Permission").values()
             if p["Properties"].get("Principal") == "events.amazonaws.com"]
    check("only the alarm rule may invoke outbound-call from EventBridge",
          perms == [{"FunctionName": {"Ref": "OutboundCallFunction"}, "Action": "lambda:InvokeFunction",
                     "Principal": "events.amazonaws.com", "SourceArn": rule_arn}], perms)


def main(path):
    os.environ.setdefault("AWS_DEFAULT_REGION", PSEUDO["AWS::Region"])
    source = cfn_yaml.load(path)
    defaults = {k: str(v.get("Default", "")) for k, v in source["Parameters"].items()}

    # Before the transform: how SAM builds each function.
    for name in ("IncomingCallFunction", "OutboundCallFunction"):
        fn = source["Resources"][name]
        check(f"{name} is built by cargo-lambda", fn["Metadata"].get("BuildMethod") == "rust-cargolambda")
    glob = source["Globals"]["Function"]
    check("functions run on provided.al2023 arm64", glob["Runtime"] == "provided.al2023" and glob["Architectures"] == ["arm64"])
    check("logs are JSON", glob["LoggingConfig"]["LogFormat"] == "JSON")

    for label, overrides in (("defaults", {}), ("all options", ALL_OPTIONS)):
        params = {**PSEUDO, **defaults, **overrides}
        packaged = copy.deepcopy(source)
        for fn in of_type(packaged["Resources"], "AWS::Serverless::Function").values():
            fn["Properties"]["CodeUri"] = "s3://bucket/key.zip"  # what `sam deploy` uploads
        for sm in of_type(packaged["Resources"], "AWS::Serverless::StateMachine").values():
            sm["Properties"]["DefinitionUri"] = "s3://bucket/asl.json"
        out = transform(packaged, params, ManagedPolicies())
        r = Resolver(params, out.get("Conditions", {}))
        # What this deployment creates: a resource whose Condition is false is not there.
        res = {k: r.value(v) for k, v in out["Resources"].items() if r.conditions.get(v.get("Condition"), True)}
        print(f"-- {label}: {len(res)} resources")

        urls = of_type(res, "AWS::Lambda::Url")
        check("exactly one Function URL, on incoming-call", list(urls) == ["IncomingCallFunctionUrl"], list(urls))
        url = urls.get("IncomingCallFunctionUrl", {}).get("Properties", {})
        check("Function URL AuthType NONE (the signature authenticates Twilio)", url.get("AuthType") == "NONE", url)
        check("Function URL has no CORS", "Cors" not in url, url.get("Cors"))
        public = [p["Properties"] for p in of_type(res, "AWS::Lambda::Permission").values() if p["Properties"].get("Principal") == "*"]
        check("only incoming-call is public", public and all(p["FunctionName"] == {"Ref": "IncomingCallFunction"} for p in public), public)

        apis = of_type(res, "AWS::ApiGatewayV2::Api")
        check("one HTTP API", len(apis) == 1, list(apis))
        for api in apis.values():
            paths = api["Properties"]["Body"]["paths"]
            ops = [(path, method, op) for path, item in paths.items() for method, op in item.items()]
            check("the only routes are POST /calls and POST /alerts",
                  sorted((p, m) for p, m, _ in ops) == [("/alerts", "post"), ("/calls", "post")], ops)
            schemes = api["Properties"]["Body"].get("components", {}).get("securitySchemes", {})
            for path, method, op in ops:
                names = [n for sec in op.get("security", []) for n in sec]
                sigv4 = all(schemes.get(n, {}).get("x-amazon-apigateway-authtype") == "awsSigv4" for n in names)
                check(f"{method.upper()} {path} requires IAM (SigV4)", names == ["AWS_IAM"] and sigv4, op.get("security"))
        check("no REST API is exposed", not of_type(res, "AWS::ApiGateway::RestApi"))

        invoke_configs = of_type(res, "AWS::Lambda::EventInvokeConfig")
        check("outbound-call has an async invoke config", len(invoke_configs) == 1, list(invoke_configs))
        for cfg in invoke_configs.values():
            p = cfg["Properties"]
            check("async retries are off (an ambiguous failure is never re-dialled)", p.get("MaximumRetryAttempts") == 0, p)
            on_failure = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            check("failures go to an on-failure destination", on_failure == {"Fn::GetAtt": ["FailedCallsQueue", "Arn"]}, p)

        schedules = of_type(res, "AWS::Scheduler::Schedule")
        check("one schedule", len(schedules) == 1)
        for sched in schedules.values():
            check("the schedule has no fixed name (a second stack must not collide)",
                  "Name" not in sched["Properties"], sched["Properties"].get("Name"))
            want = "ENABLED" if overrides.get("ScheduleExpression") else "DISABLED"
            check(f"schedule {want.lower()}", sched["Properties"].get("State") == want, sched["Properties"].get("State"))
            check("schedule has a dead-letter queue", "DeadLetterConfig" in sched["Properties"]["Target"])

        # A physical name is either left to CloudFormation or carries the stack's name, so a
        # second stack in the same account and region deploys beside this one.
        for name, resource in res.items():
            key = PHYSICAL_NAME.get(resource["Type"])
            value = resource.get("Properties", {}).get(key) if key else None
            if value is not None:
                check(f"{name} {key} is unique per stack", isinstance(value, str) and PSEUDO["AWS::StackName"] in value, value)

        for name, fn in of_type(res, "AWS::Lambda::Function").items():
            p = fn["Properties"]
            reserved = params[RESERVED[name]]
            if reserved:
                check(f"{name} reserves {reserved} concurrent executions",
                      str(p.get("ReservedConcurrentExecutions")) == reserved, p.get("ReservedConcurrentExecutions"))
            else:
                check(f"{name} reserves nothing when the parameter is empty (never 0)",
                      "ReservedConcurrentExecutions" not in p, p.get("ReservedConcurrentExecutions"))
            check(f"{name} timeout fits its caller", p["Timeout"] <= (14 if "Incoming" in name else 29), p["Timeout"])
            env = p.get("Environment", {}).get("Variables", {})
            names = {k: v for k, v in env.items() if k.endswith("_PARAMETER")}
            check(f"{name} environment names SSM parameters, never secrets",
                  names and all(isinstance(v, str) and v.startswith("/") for v in names.values()), env)

        readable = {}
        for name, role in of_type(res, "AWS::IAM::Role").items():
            for st in statements(role):
                actions = as_list(st.get("Action", []))
                resources = as_list(st.get("Resource", []))
                check(f"{name}: no wildcard action", not any(a == "*" or a.endswith(":*") for a in actions), actions)
                log_delivery = name == "AlertEscalationStateMachineRole" and sorted(actions) == LOG_DELIVERY
                check(f"{name}: no '*' resource", "*" not in resources or log_delivery, resources)
                if any(a.startswith("ssm:") for a in actions):
                    check(f"{name}: SSM actions are GetParameters only", actions == ["ssm:GetParameters"], actions)
                    prefix = "arn:aws:ssm:ap-northeast-1:123456789012:parameter/"
                    check(f"{name}: SSM on exact parameter ARNs",
                          all(isinstance(a, str) and a.startswith(prefix) and "*" not in a for a in resources), resources)
                    readable[name] = {a[len(prefix) - 1:] for a in resources if isinstance(a, str)}
                if any(a.startswith("kms:") for a in actions):
                    check(f"{name}: kms:Decrypt only, via SSM", actions == ["kms:Decrypt"]
                          and st.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService") == "ssm.ap-northeast-1.amazonaws.com", st)
                    check(f"{name}: kms on the configured key only", resources == [overrides.get("KmsKeyArn")], resources)
            kms = [st for st in statements(role) if any(a.startswith("kms:") for a in as_list(st["Action"]))]
            if name in ("IncomingCallFunctionRole", "OutboundCallFunctionRole"):
                check(f"{name}: kms only with a customer-managed key", bool(kms) == bool(overrides.get("KmsKeyArn")), kms)

        inc, out_ = readable.get("IncomingCallFunctionRole", set()), readable.get("OutboundCallFunctionRole", set())
        want_in = {params["AuthTokenParameterName"]} | {params[k] for k in ("PreviousAuthTokenParameterName", "CallFlowParameterName") if params[k]}
        check("incoming-call reads exactly its tokens (and call flow)", inc == want_in, inc)
        if overrides.get("ApiKeySidParameterName"):
            want_out = {params[k] for k in ("AccountSidParameterName", "ApiKeySidParameterName", "ApiKeySecretParameterName")}
        else:
            want_out = {params["AccountSidParameterName"], params["AuthTokenParameterName"]}
        if params["EscalationPoliciesParameterName"]:
            want_out.add(params["EscalationPoliciesParameterName"])
        check("outbound-call reads exactly its credentials", out_ == want_out, out_)
        check_ledger(res, overrides, r.conditions)
        check_alerts(res, overrides, source.get("Rules", {}))

    check_samconfig(source)

    failed = results.count(False)
    print(f"template: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
