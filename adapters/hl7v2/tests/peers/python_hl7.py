"""An independent HL7 v2 peer: python-hl7 (PyPI `hl7`, not written here) reads what the adapter
builds and talks MLLP to its server. Used by tests/it/peer.rs.

usage: python_hl7.py DIR PORT
  DIR holds mdm-html.hl7, mdm-text.hl7, ack-error.hl7 and ref.hl7 (written by the test).
  PORT is the adapter's MLLP server on 127.0.0.1: ref.hl7 is sent there and the ACK read.
Prints one JSON object with what python-hl7 read.
"""
import asyncio
import json
import os
import sys

import hl7
from hl7.mllp import open_hl7_connection


def read(directory, name):
    with open(os.path.join(directory, name), newline="") as f:
        return hl7.parse(f.read())


async def exchange(directory, port):
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    writer.writemessage(read(directory, "ref.hl7"))
    await writer.drain()
    reply = await asyncio.wait_for(reader.readmessage(), 5)
    writer.close()
    return reply


def main():
    directory, port = sys.argv[1], int(sys.argv[2])
    html = read(directory, "mdm-html.hl7")
    text = read(directory, "mdm-text.hl7")
    ack = read(directory, "ack-error.hl7")
    reply = asyncio.run(exchange(directory, port))
    ed = html.segment("OBX")[5][0]
    print(json.dumps({
        "mdm_type": str(html.segment("MSH")[9]),
        "mdm_document": str(html.segment("TXA")[12]),
        "mdm_pid3": str(html.segment("PID")[3]),
        "mdm_ed": [str(ed[1]), str(ed[2]), str(ed[3]), str(ed[4])],
        "tx_lines": [text.unescape(str(obx[5])) for obx in text.segments("OBX")],
        "ack_msa": [str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])],
        "ack_err": [str(ack.segment("ERR")[2]), str(ack.segment("ERR")[3])],
        "reply_msa": [str(reply.segment("MSA")[1]), str(reply.segment("MSA")[2])],
    }))


if __name__ == "__main__":
    main()
