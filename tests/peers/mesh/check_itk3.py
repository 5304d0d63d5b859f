"""Independently validate an ITK3 GP Connect Send Document message (FHIR STU3 JSON).

    python check_itk3.py FILE [--pdf-out PATH] [--event ITK007C]

Loads the message Bundle with PyPI `fhir.resources` STU3 models (every nested
resource, including the inner document Bundle, is parsed into its own model and
so validated), then checks the ITK3 shape: a message Bundle whose first entry is
a MessageHeader with the expected ITK-MessageEvent-2 event and the
Extension-ITK-MessageHandling-2 extension, a focus that resolves to a document
Bundle whose first entry is a Composition, every urn:uuid reference resolving to
an entry, and a base64 PDF Binary. Prints one JSON summary line and exits 0, or
prints the error and exits 1.
"""

import argparse
import base64
import json
import sys

from fhir.resources.STU3.bundle import Bundle

EVENT_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2"
HANDLING_URL = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-ITK-MessageHandling-2"


class Invalid(Exception):
    pass


def require(condition, text):
    if not condition:
        raise Invalid(text)


def walk_references(node, found):
    """Collect every Reference.reference string anywhere in a JSON tree."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            found.append(node["reference"])
        for value in node.values():
            walk_references(value, found)
    elif isinstance(node, list):
        for value in node:
            walk_references(value, found)
    return found


def check(path, event_code, pdf_out):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    message = Bundle.model_validate(raw)
    require(message.type == "message", f"Bundle.type is {message.type!r}, expected 'message'")
    require(message.entry, "message Bundle has no entries")

    header = message.entry[0].resource
    require(header is not None and header.get_resource_type() == "MessageHeader",
            "first entry is not a MessageHeader")
    require(header.event.system == EVENT_SYSTEM and header.event.code == event_code,
            f"MessageHeader.event is {header.event.system}|{header.event.code}, expected {EVENT_SYSTEM}|{event_code}")
    handling = [e for e in header.extension or [] if e.url == HANDLING_URL]
    require(len(handling) == 1, "MessageHeader lacks the ITK-MessageHandling-2 extension")
    keys = {e.url for e in handling[0].extension or []}
    for key in ("BusAckRequested", "InfAckRequested", "RecipientType", "MessageDefinition", "SenderReference"):
        require(key in keys, f"MessageHandling extension lacks {key}")

    by_url = {e.fullUrl: e.resource for e in message.entry if e.fullUrl}
    require(header.focus, "MessageHeader.focus is missing")
    document = by_url.get(header.focus[0].reference)
    require(document is not None and document.get_resource_type() == "Bundle" and document.type == "document",
            "MessageHeader.focus does not resolve to a document Bundle entry")
    require(document.entry and document.entry[0].resource.get_resource_type() == "Composition",
            "first entry of the document Bundle is not a Composition")
    composition = document.entry[0].resource
    by_url.update({e.fullUrl: e.resource for e in document.entry if e.fullUrl})

    for reference in walk_references(raw, []):
        if reference.startswith("urn:uuid:"):
            require(reference in by_url, f"reference {reference} resolves to no entry")

    types = [e.resource.get_resource_type() for e in message.entry]
    doc_types = [e.resource.get_resource_type() for e in document.entry]
    binaries = [r for r in by_url.values() if r.get_resource_type() == "Binary"]
    require(binaries, "no Binary resource found")
    pdf = next((b for b in binaries if b.contentType == "application/pdf"), None)
    require(pdf is not None, "no Binary with contentType application/pdf")
    # fhir.resources has already base64-decoded (and so checked) base64Binary content
    data = pdf.content if isinstance(pdf.content, bytes) else base64.b64decode(pdf.content, validate=True)
    require(data.startswith(b"%PDF-"), "PDF Binary content does not start with %PDF-")
    if pdf_out:
        with open(pdf_out, "wb") as f:
            f.write(data)

    return {
        "valid": True,
        "event": f"{header.event.code}",
        "message_header_id": header.id,
        "resource_types": types,
        "document_resource_types": doc_types,
        "composition_title": composition.title,
        "pdf_bytes": len(data),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--pdf-out", help="write the decoded PDF here")
    parser.add_argument("--event", default="ITK007C", help="expected MessageHeader event code")
    args = parser.parse_args()
    try:
        print(json.dumps(check(args.file, args.event, args.pdf_out)))
    except Exception as err:  # pydantic ValidationError, Invalid, JSON and base64 errors
        print(f"invalid: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
