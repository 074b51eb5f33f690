#!/usr/bin/env python3
"""python-hl7's asyncio MLLP server with a one-field mapping: the comparison point for
`plexus bench` (see bench/compare.py).

Usage:
    pip install hl7
    python3 bench/python_mllp_server.py --port 2590

For each message it maps SCH-25 (local visit status -> HL7 table 0278 code) through a
dict, as the engine's visit-status-map plug-in does, and answers with an AA built by
`message.create_ack()`. It prints "listening on PORT" once ready.

It keeps NO journal: nothing is written to disk before the ACK, and nothing is forwarded
anywhere, where Plexus commits every message (fsync) before acknowledging it and then
delivers it. That flatters python.
"""
import argparse
import asyncio
import signal
import sys

import hl7
from hl7.mllp import start_hl7_server

# The same words the bench sends, and the codes the bundled visit-status table gives them.
STATUS = {
    "Arrived": "Started",
    "Checked In": "Started",
    "Roomed": "Started",
    "Ready": "Started",
}


def map_status(message):
    """The one-field mapping: SCH-25 through STATUS; an unknown word is left alone."""
    local = str(message["SCH.F25"])
    code = STATUS.get(local)
    if code is not None:
        message["SCH.F25"] = code
    return message


async def serve_connection(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            map_status(message)
            writer.writemessage(message.create_ack())
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass  # the client closed the connection
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with await start_hl7_server(serve_connection, args.host, args.port) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port} (python-hl7 {hl7.__version__}, no journal)", flush=True)
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
