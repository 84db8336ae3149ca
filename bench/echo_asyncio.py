#!/usr/bin/env python3
"""The tutorials' asyncio echo server, the Python baseline of bench/echo.sh.

    python3 bench/echo_asyncio.py 127.0.0.1:9102

StreamReader.read(65536), writer.write, await writer.drain(): the usual style, nothing tuned.
"""
import asyncio
import sys


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(addr):
    host, _, port = addr.rpartition(":")
    server = await asyncio.start_server(handle, host or "127.0.0.1", int(port))
    bound = server.sockets[0].getsockname()
    print(f"echo_asyncio: listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9102"))
    except KeyboardInterrupt:
        pass
