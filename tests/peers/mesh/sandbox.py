"""Run NHS England's PyPI `mesh-sandbox` on loopback with Signpost's test mailboxes.

    python tests/peers/mesh/sandbox.py --port 8700 [--host 127.0.0.1] [--data-dir DIR]
        [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]

Plain HTTP (or HTTPS, with client certificates required when --tls-client-ca is given), one worker, in-memory store unless STORE_MODE/MAILBOXES_DATA_DIR say
otherwise. Defaults (each can be overridden in the environment): AUTH_MODE=full,
STORE_MODE=memory, SHARED_KEY=TestKey.

Two things are added on top of the unmodified sandbox package:

1. Mailboxes and workflows come from `data/mailboxes.jsonl` and
   `data/workflows.jsonl` beside this file instead of the package's own copies
   (the package has no setting for this, so the store's data directory is
   repointed before the first request creates the store).

2. GPPROVIDER routing. Real MESH resolves `mex-To: GPPROVIDER_<NHS>_<DOB>_<Surname>`
   (PDS cross-check, then endpoint lookup of the GP's ODS code + workflow) and, on
   failure, still answers 202 but puts an error REPORT (EPL-150..154, event SEND)
   into the sender's inbox. The sandbox does not: it answers 417 "Unregistered to
   address". Here the outbox handler is wrapped so that GPPROVIDER addresses are
   resolved against `data/patients.jsonl` and the lookup data, and failures produce
   that REPORT. DOB is accepted as DDMMYYYY or YYYYMMDD. Every other send is left
   to the sandbox untouched.
"""

import argparse
import datetime as dt
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from uuid import uuid4

HERE = Path(__file__).resolve().parent

for name, value in {"AUTH_MODE": "full", "STORE_MODE": "memory", "SHARED_KEY": "TestKey"}.items():
    os.environ.setdefault(name, value)

warnings.filterwarnings("ignore", message=".*has been deprecated.*")  # FastAPI noise from the package

import uvicorn  # noqa: E402
from mesh_sandbox.api import app  # noqa: E402
from mesh_sandbox.dependencies import get_messaging  # noqa: E402
from mesh_sandbox.handlers.outbox import OutboxHandler  # noqa: E402
from mesh_sandbox.models.message import (  # noqa: E402
    Message, MessageEvent, MessageMetadata, MessageParty, MessageStatus, MessageType,
)
from mesh_sandbox.store.canned_store import CannedStore  # noqa: E402
from mesh_sandbox.views.outbox import send_message_response  # noqa: E402

DATA_DIR = HERE / "data"
EPL = {
    "EPL-150": "Multiple mailboxes matches",
    "EPL-151": "No mailbox matched",
    "EPL-152": "Invalid NHS Number",
    "EPL-153": "NHS Number not found",
    "EPL-154": "NHS Number supplied does not match the demographics",
}


def _use_data_dir():
    original = CannedStore.initialise

    def initialise(self):
        self._canned_data_dir = str(DATA_DIR)
        original(self)

    CannedStore.initialise = initialise


def nhs_number_valid(nhs: str) -> bool:
    if len(nhs) != 10 or not nhs.isdigit():
        return False
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(nhs[:9])) % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(nhs[9])


def _dob_candidates(text: str) -> set:
    found = set()
    for fmt in ("%d%m%Y", "%Y%m%d"):
        try:
            found.add(dt.datetime.strptime(text, fmt).date().isoformat())
        except ValueError:
            pass
    return found


async def resolve_gpprovider(messaging, to: str, workflow_id: str):
    """Return (mailbox_id, None) or (None, EPL code) for a GPPROVIDER_ address."""
    parts = to.split("_", 3)
    if len(parts) != 4 or not nhs_number_valid(parts[1]):
        return None, "EPL-152"
    _, nhs, dob, surname = parts
    patients = [json.loads(line) for line in (DATA_DIR / "patients.jsonl").read_text().splitlines() if line.strip()]
    patient = next((p for p in patients if p["nhs_number"] == nhs), None)
    if patient is None:
        return None, "EPL-153"
    if patient["surname"].upper() != surname.upper() or patient["birth_date"] not in _dob_candidates(dob):
        return None, "EPL-154"
    mailboxes = await messaging.lookup_by_ods_code_and_workflow_id(patient["gp_ods"].upper(), workflow_id)
    if len(mailboxes) > 1:
        return None, "EPL-150"
    if not mailboxes:
        return None, "EPL-151"
    return mailboxes[0].mailbox_id, None


async def _report_failure(messaging, sender, headers, body: bytes, code: str, background_tasks):
    """Accept the message as failed and drop an EPL error REPORT into the sender's inbox."""
    metadata = MessageMetadata(
        subject=headers.mex_subject, local_id=headers.mex_localid, file_name=headers.mex_filename or None,
        content_type=headers.mex_content_type,
    )
    failed = Message(
        message_id=uuid4().hex.upper(),
        events=[MessageEvent(status=MessageStatus.ERROR, event="SEND", code=code, description=EPL[code])],
        sender=MessageParty(mailbox_id=sender.mailbox_id, mailbox_name=sender.mailbox_name,
                            ods_code=sender.ods_code, org_code=sender.org_code),
        recipient=MessageParty(mailbox_id=""),
        message_type=MessageType.DATA, workflow_id=headers.mex_workflow_id, metadata=metadata,
        file_size=len(body),
    )
    messaging.store.messages[failed.message_id] = failed  # memory only; never written to disk
    await messaging.store.add_to_outbox(failed)
    report = Message(
        message_id=uuid4().hex.upper(),
        events=[MessageEvent(status=MessageStatus.ERROR, event="SEND", code=code, description=EPL[code],
                             linked_message_id=failed.message_id)],
        sender=MessageParty(mailbox_id="", mailbox_name="Central System Mailbox"),
        recipient=MessageParty(mailbox_id=sender.mailbox_id, mailbox_name=sender.mailbox_name,
                               ods_code=sender.ods_code, org_code=sender.org_code),
        total_chunks=0, message_type=MessageType.REPORT, workflow_id=headers.mex_workflow_id,
        metadata=MessageMetadata(subject=headers.mex_subject, local_id=headers.mex_localid),
    )
    await messaging.send_message(message=report, body=b"", background_tasks=background_tasks)
    return failed


def _route_gpprovider():
    original = OutboxHandler.send_message

    async def send_message(self, *, background_tasks, request, sender_mailbox, mex_headers, **kwargs):
        # the sandbox's router calls this with keyword arguments only
        if not mex_headers.mex_to.startswith("GPPROVIDER_"):
            return await original(self, background_tasks=background_tasks, request=request,
                                  sender_mailbox=sender_mailbox, mex_headers=mex_headers, **kwargs)
        messaging = get_messaging()
        mailbox_id, code = await resolve_gpprovider(messaging, mex_headers.mex_to, mex_headers.mex_workflow_id)
        if mailbox_id:
            return await original(self, background_tasks=background_tasks, request=request,
                                  sender_mailbox=sender_mailbox, mex_headers=mex_headers.update(mex_to=mailbox_id),
                                  **kwargs)
        failed = await _report_failure(messaging, sender_mailbox, mex_headers, await request.body(), code,
                                       background_tasks)
        return send_message_response(failed, kwargs.get("accepts_api_version", 1))

    OutboxHandler.send_message = send_message


def main():
    global DATA_DIR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="holds mailboxes/workflows/patients.jsonl")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="... and this private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA (PEM), as MESH does")
    args = parser.parse_args()
    DATA_DIR = args.data_dir.resolve()
    if os.environ["STORE_MODE"] not in ("memory", "file"):
        sys.exit("STORE_MODE must be memory or file for this launcher")
    _use_data_dir()
    _route_gpprovider()
    logging.getLogger("mesh-sandbox").setLevel(args.log_level.upper())
    tls = {}
    if args.tls_cert:
        tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
        if args.tls_client_ca:
            import ssl
            tls.update(ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level=args.log_level, **tls)


if __name__ == "__main__":
    main()
