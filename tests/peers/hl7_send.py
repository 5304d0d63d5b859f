#!/usr/bin/env python3
"""Send an HL7 v2 message over MLLP with python-hl7 (PyPI `hl7`, written independently of
Signpost) and report the ACK as python-hl7 reads it.

  hl7_send.py PORT FILE
Prints one JSON object: {"msa1": ..., "msa2": ..., "err": [ERR segments as text]}.
"""
import asyncio
import json
import sys

import hl7
from hl7.mllp import open_hl7_connection


async def main(port: int, path: str) -> None:
    with open(path, newline="") as f:
        text = f.read().replace("\r\n", "\r").replace("\n", "\r")
    message = hl7.parse(text)
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    writer.writemessage(message)
    await writer.drain()
    ack = await asyncio.wait_for(reader.readmessage(), 10)
    writer.close()
    msa = ack.segment("MSA")
    errors = [str(s) for s in ack if str(s[0]) == "ERR"]
    print(json.dumps({"msa1": str(msa[1]), "msa2": str(msa[2]), "err": errors}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
