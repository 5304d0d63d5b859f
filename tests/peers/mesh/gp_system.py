"""A GP practice system peer for Signpost's MESH/ITK3 tests, built on PyPI `mesh-client`.

    python gp_system.py [--url URL --mailbox ID --password PW --shared-key KEY] receive --out DIR
    python gp_system.py [...] ack --to MAILBOX --in-reply-to FILE --code 30001
                                  [--workflow GPFED_CONSULT_REPORT_ACK] [--kind business|infrastructure]
                                  [--diagnostics TEXT] [--save PATH]

Connection options default to $MESH_URL, $MESH_MAILBOX, $MESH_PASSWORD and
$MESH_SHARED_KEY (else http://127.0.0.1:8700, A81001OT001, gp-password, TestKey).

`receive` lists the mailbox's inbox, downloads each message (chunks and gzip are
handled by mesh-client), writes DIR/<id>.body and DIR/<id>.headers.json (every
mex-* header, lower-case names), acknowledges it, and prints one JSON line each.

`ack` reads a received ITK3 message (FILE, e.g. a .body written by `receive`),
builds an ITK3 Response (event ITK008M) with fhir.resources STU3 models, checks
it parses back, and sends it from this mailbox to MAILBOX. It prints one JSON line.
"""

import argparse
import datetime as dt
import gzip
import json
import os
import re
import sys
import uuid
from pathlib import Path

from fhir.resources.STU3.bundle import Bundle
from fhir.resources.STU3.messageheader import MessageHeader
from fhir.resources.STU3.operationoutcome import OperationOutcome
from fhir.resources.STU3.organization import Organization
from mesh_client import MeshClient

HANDLING_URL = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-ITK-MessageHandling-2"
RESPONSE_CODES = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-ResponseCodes-1"
UNREADABLE = "UNREADABLE-IN-ORIGINAL-MESSAGE"
# ITK3 response codes (ITK3 Messaging Distribution, "ITK3 Response Codes")
CODES = {
    "10001": "Handling Specification Error",
    "10002": "Infrastructure Level Response Value - Processing Error",
    "10003": "Business Level Response Value - Processing Error",
    "10004": "Message Definition Value - Processing Error",
    "10005": "Message Definition Version Value - Processing Error",
    "10006": "Priority Value - Processing Error",
    "10007": "Sender Reference Value - Processing Error",
    "10008": "Handling Specification Business Rule Error",
    "10009": "Unreadable message received",
    "20001": "Unrecognised Recipient Person",
    "20002": "Unrecognised Recipient Organisation",
    "20003": "Unrecognised Sender",
    "20004": "Non-Approved file type received as an attachment",
    "20005": "Unsupported file type received as an attachment",
    "20006": "ITK header validation failure",
    "20007": "Duplicate Message received",
    "20008": "Duplicate Document received",
    "20009": "Payload validation failure",
    "20010": "Unrecognised Payload Recipient Organisation",
    "20011": "Unrecognised Payload Recipient Person",
    "20012": "Unauthorised Sender",
    "20013": "Success",
    "30001": "Patient known here. (e.g. Patient is registered here)",
    "30002": "Patient not known here. (aka 'patient record not present in system')",
    "30003": "Patient no longer at this clinical setting",
}
POSITIVE = {"20013", "30001"}
NOT_FOUND = {"20001", "20002", "20010", "20011", "30002", "30003"}
DUPLICATE = {"20007", "20008"}


def connect(args) -> MeshClient:
    tls = {}
    if args.cert:
        tls["cert"] = (args.cert, args.key)
    if args.ca:
        tls["verify"] = args.ca
        # requests also checks against its own bundle per request; point that at the CA too.
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca
    return MeshClient(args.url, args.mailbox, args.password, shared_key=args.shared_key.encode(),
                      max_retries=0, application_name="signpost-gp-peer", **tls)


def receive(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with connect(args) as client:
        client.handshake()
        for message_id in client.list_messages():
            message = client.retrieve_message(message_id)
            body = message.read()
            headers = {f"mex-{key}": value for key, value in sorted(message.mex_headers())}
            (out / f"{message_id}.body").write_bytes(body)
            (out / f"{message_id}.headers.json").write_text(json.dumps(headers, indent=2))
            message.acknowledge()
            message.close()
            print(json.dumps({
                "message_id": message_id,
                "message_type": headers.get("mex-messagetype"),
                "from": headers.get("mex-from"),
                "workflow_id": headers.get("mex-workflowid"),
                "content_type": message.content_type,
                "bytes": len(body),
                "status_code": headers.get("mex-statuscode"),
                "linked_message_id": headers.get("mex-linkedmsgid"),
                "body": str(out / f"{message_id}.body"),
                "headers": str(out / f"{message_id}.headers.json"),
            }), flush=True)


def read_original(path):
    """Return (MessageHeader.id, SenderReference sub-extension or None) of a received ITK3 message."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        raw = json.loads(data)
        header = raw["entry"][0]["resource"]
        assert header["resourceType"] == "MessageHeader"
    except Exception:
        return UNREADABLE, None
    try:
        Bundle.model_validate(raw)  # only to say so in the output; the id is still used if invalid
    except Exception as err:
        print(f"note: received message does not validate as STU3: {str(err).splitlines()[0]}", file=sys.stderr)
    handling = next((e for e in header.get("extension", []) if e.get("url") == HANDLING_URL), {})
    sender_ref = next((e for e in handling.get("extension", []) if e.get("url") == "SenderReference"), None)
    return header.get("id") or UNREADABLE, sender_ref


def build_response(args, original_id, sender_ref) -> Bundle:
    code = args.code
    ok = code in POSITIVE
    ids = {name: str(uuid.uuid4()) for name in ("bundle", "header", "org", "outcome")}
    urn = {name: f"urn:uuid:{value}" for name, value in ids.items()}
    handling = [
        {"url": "BusAckRequested", "valueBoolean": False},
        {"url": "InfAckRequested", "valueBoolean": False},
        {"url": "RecipientType", "valueCoding": {"system": "https://fhir.nhs.uk/STU3/CodeSystem/ITK-RecipientType-1",
                                                 "code": "FA", "display": "For Action"}},
        {"url": "MessageDefinition", "valueReference": {
            "reference": "https://fhir.nhs.uk/STU3/MessageDefinition/ITK-Response-MessageDefinition-1"}},
    ]
    if sender_ref:
        handling.append(sender_ref)
    header = MessageHeader(
        id=ids["header"],
        meta={"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/ITK-MessageHeader-2"]},
        extension=[{"url": HANDLING_URL, "extension": handling}],
        event={"system": "https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2", "code": "ITK008M",
               "display": "ITK Response"},
        sender={"reference": urn["org"]},
        timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source={"endpoint": args.mailbox},
        response={"identifier": original_id, "code": "ok" if ok else "fatal-error",
                  "details": {"reference": urn["outcome"]}},
    )
    organization = Organization(
        id=ids["org"],
        meta={"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-ITK-Header-Organization-1"]},
        identifier=[{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": args.ods}],
        name=f"GP practice {args.ods}",
    )
    issue = {
        "severity": "information" if ok else "fatal",
        "code": "informational" if ok else "not-found" if code in NOT_FOUND else
                "duplicate" if code in DUPLICATE else "processing",
        "details": {"coding": [{"system": RESPONSE_CODES, "code": code, "display": CODES[code]}]},
    }
    if args.diagnostics or not ok:
        issue["diagnostics"] = args.diagnostics or CODES[code]
    outcome = OperationOutcome(id=ids["outcome"], issue=[issue])
    return Bundle(
        id=ids["bundle"],
        meta={"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Message-Bundle-1"]},
        identifier={"system": "https://tools.ietf.org/html/rfc4122", "value": ids["bundle"]},
        type="message",
        entry=[{"fullUrl": urn["header"], "resource": header},
               {"fullUrl": urn["org"], "resource": organization},
               {"fullUrl": urn["outcome"], "resource": outcome}],
    )


def ack(args):
    if args.code not in CODES:
        sys.exit(f"unknown ITK3 response code {args.code}; known: {', '.join(CODES)}")
    kind = args.kind or ("business" if args.code.startswith("3") else "infrastructure")
    if (kind == "business") != args.code.startswith("3"):
        sys.exit(f"code {args.code} is not a {kind} ack code (business: 3xxxx, infrastructure: 1xxxx/2xxxx)")
    original_id, sender_ref = read_original(args.in_reply_to)
    payload = build_response(args, original_id, sender_ref).model_dump_json(exclude_none=True, by_alias=True)
    checked = Bundle.model_validate_json(payload)  # what goes on the wire must parse back
    assert checked.entry[0].resource.response.identifier == original_id
    if args.save:
        Path(args.save).write_text(json.dumps(json.loads(payload), indent=2))
    with connect(args) as client:
        message_id = client.send_message(args.to, payload.encode(), workflow_id=args.workflow,
                                         content_type="application/fhir+json", subject=args.subject,
                                         local_id=args.local_id or args.ods)
    print(json.dumps({"message_id": message_id, "to": args.to, "workflow_id": args.workflow, "kind": kind,
                      "code": args.code, "response_code": checked.entry[0].resource.response.code,
                      "in_reply_to": original_id}), flush=True)


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=env("MESH_URL", "http://127.0.0.1:8700"))
    parser.add_argument("--mailbox", default=env("MESH_MAILBOX", "A81001OT001"))
    parser.add_argument("--password", default=env("MESH_PASSWORD", "gp-password"))
    parser.add_argument("--shared-key", default=env("MESH_SHARED_KEY", "TestKey"))
    parser.add_argument("--cert", help="client certificate (PEM) for a MESH server over mutual TLS")
    parser.add_argument("--key", help="the client certificate's private key (PEM)")
    parser.add_argument("--ca", help="CA certificate (PEM) that signs the server's certificate")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("receive", help="download, save and acknowledge every inbox message")
    rec.add_argument("--out", required=True)
    rec.set_defaults(run=receive)
    ak = commands.add_parser("ack", help="send an ITK3 Response for a received message")
    ak.add_argument("--to", required=True, help="recipient mailbox (the original sender)")
    ak.add_argument("--workflow", default="GPFED_CONSULT_REPORT_ACK")
    ak.add_argument("--in-reply-to", required=True, help="the received ITK3 message file")
    ak.add_argument("--code", required=True, help="ITK3 response code, e.g. 30001, 30002, 20013, 20009")
    ak.add_argument("--kind", choices=["business", "infrastructure"], help="default: from the code")
    ak.add_argument("--diagnostics", help="OperationOutcome.issue.diagnostics (defaulted for errors)")
    ak.add_argument("--ods", help="this practice's ODS code (default: taken from the mailbox id)")
    ak.add_argument("--subject", default="ITK3 Response")
    ak.add_argument("--local-id")
    ak.add_argument("--save", help="also write the response Bundle JSON here")
    ak.set_defaults(run=ack)
    args = parser.parse_args()
    if getattr(args, "ods", None) is None and args.command == "ack":
        match = re.match(r"[A-Z]\d{5}", args.mailbox.upper())
        args.ods = match.group(0) if match else args.mailbox.upper()
    args.run(args)


if __name__ == "__main__":
    main()
