#!/usr/bin/env python3
"""A webhook receiver for Signpost's signed webhooks, written independently with the Python
standard library only (hmac, hashlib, http.server), following the recipe in
docs/scheme-developers.md.

  webhook_receiver.py serve PORT SECRET OUTFILE
      Listen on 127.0.0.1:PORT. For each POST, verify Signpost-Signature; answer 200 when it
      verifies (also for an Idempotency-Key seen before, without recording it twice), 401 when
      it does not. Append one JSON line per request to OUTFILE:
      {"verified": bool, "idempotency_key": str, "signature": str, "body": str}.
  webhook_receiver.py verify SECRET SIGNATURE BODYFILE
      Exit 0 when SIGNATURE verifies for the bytes of BODYFILE (any age), 1 when it does not.
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_SECONDS = 300


def verify(secret: bytes, header: str, body: bytes, now=None) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if now is not None and abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def serve(port: int, secret: bytes, outfile: str) -> None:
    seen = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature = self.headers.get("Signpost-Signature", "")
            key = self.headers.get("Idempotency-Key", "")
            ok = verify(secret, signature, body, now=int(time.time()))
            if ok and key not in seen:
                seen.add(key)
                with open(outfile, "a") as f:
                    f.write(json.dumps({"verified": True, "idempotency_key": key,
                                        "signature": signature, "body": body.decode()}) + "\n")
            elif not ok:
                with open(outfile, "a") as f:
                    f.write(json.dumps({"verified": False, "idempotency_key": key,
                                        "signature": signature, "body": body.decode()}) + "\n")
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4])
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "verify":
        with open(sys.argv[4], "rb") as f:
            body = f.read()
        return 0 if verify(sys.argv[2].encode(), sys.argv[3], body) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
