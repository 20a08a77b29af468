#!/usr/bin/env python3
"""Opens N connections to a proxy, makes each do one thing, then holds them.

Used by benches/idle_memory.sh. Modes:
  plain, tls   one keep-alive GET /bench per connection, read whole, then idle
  sse          one GET /events per connection, read up to the first event,
               then the stream stays open (the proxy holds it to its upstream)
Prints "ready N" once every connection is in place, then sleeps until killed.
"""

import asyncio
import ssl
import sys


async def one(host, port, mode, ctx):
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    path = "/events" if mode == "sse" else "/bench"
    accept = "text/event-stream" if mode == "sse" else "*/*"
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: {accept}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not (head.startswith(b"HTTP/1.") and head[8:13] == b" 200 "):
        raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
    if mode == "sse":
        await reader.readuntil(b"\n\n")
    else:
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
    return reader, writer


async def main():
    host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ctx = None
    if mode == "tls":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    held = []
    # In batches: a burst of thousands of SYNs at once overflows the backlog.
    for start in range(0, n, 100):
        batch = [one(host, port, mode, ctx) for _ in range(start, min(n, start + 100))]
        held += await asyncio.gather(*batch)
    print(f"ready {len(held)}", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
