#!/usr/bin/env python3
"""A queue-pull scheme written independently with pika: the worked example of
docs/scheme-developers.md, run by the tests.

  queue_pull_scheme.py AMQP_URL ENDPOINT_ID OTHER_QUEUE

1. Tries to consume OTHER_QUEUE (another scheme's queue) and expects RabbitMQ to refuse
   (ACCESS_REFUSED, 403); prints "refused OTHER_QUEUE".
2. Takes one referral from its own queue sp.referrals.ENDPOINT_ID (waiting up to 30 s), prints
   "received <referral id>", answers with a scheme-response envelope carrying an accepted Task,
   published to exchange sp.replies with routing key ENDPOINT_ID, waits for the broker's
   confirm, then acknowledges the referral; prints "replied <message id>".
Exits 0 when all of that happened.
"""
import json
import sys
import time
import uuid
from datetime import datetime, timezone

import pika
import pika.exceptions


def main() -> int:
    url, endpoint, other = sys.argv[1], sys.argv[2], sys.argv[3]
    params = pika.URLParameters(url)

    # 1. Another scheme's queue is refused.
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    try:
        channel.basic_get(other, auto_ack=False)
        print("NOT refused", other)
        return 1
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code != 403:
            print("unexpected close", e.reply_code, e.reply_text)
            return 1
        print("refused", other)
    conn.close()

    # 2. Our own queue: one referral, answered, then acknowledged.
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    channel.confirm_delivery()
    queue = f"sp.referrals.{endpoint}"
    deadline = time.time() + 30
    method = body = None
    while time.time() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=False)
        if method:
            break
        time.sleep(0.2)
    if not method:
        print("nothing arrived")
        return 1
    envelope = json.loads(body)
    assert envelope["schema_version"] == 1 and envelope["kind"] == "referral-message", envelope
    bundle = envelope["payload"]
    sr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    print("received", sr["id"])
    now = datetime.now(timezone.utc).isoformat()
    response = {
        "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message", "timestamp": now,
        "entry": [
            {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": {
                "resourceType": "MessageHeader",
                "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-events-bars",
                                "code": "servicerequest-response"},
                "source": {"endpoint": endpoint},
                "response": {"identifier": bundle["id"], "code": "ok"},
                "focus": [{"reference": "urn:uuid:task"}]}},
            {"fullUrl": "urn:uuid:task", "resource": {
                "resourceType": "Task", "status": "accepted", "intent": "order",
                "focus": {"reference": "ServiceRequest/" + sr["id"]}}},
        ],
    }
    reply = {
        "schema_version": 1, "message_id": str(uuid.uuid4()),
        "correlation_id": envelope["correlation_id"], "kind": "scheme-response",
        "referral_id": envelope["referral_id"], "target": endpoint, "created_at": now,
        "traceparent": envelope["traceparent"], "payload": response,
    }
    channel.basic_publish(
        exchange="sp.replies", routing_key=endpoint, body=json.dumps(reply).encode(),
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                        message_id=reply["message_id"],
                                        correlation_id=reply["correlation_id"],
                                        type="scheme-response"),
        mandatory=True)
    channel.basic_ack(method.delivery_tag)
    print("replied", reply["message_id"])
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
