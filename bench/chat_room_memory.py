#!/usr/bin/env python3
"""Memory one client can pin through the rooms' replay caches (issue 12): N connections, each alone
in a room of its own, each saying 20 lines of 4 KB; the server's RSS before, with everyone
connected, and after all have left. Runs `BINARY chat --no-history` on a free loopback port.

    python3 bench/chat_room_memory.py target/release/sockit 1000 [OLDER_BINARY ...]
"""
import os
import re
import socket
import subprocess
import sys
import time


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def drain(socks):
    for s in socks:
        try:
            while s.recv(1 << 16):
                pass
        except (BlockingIOError, ConnectionError):
            pass


def measure(binary, n):
    p = subprocess.Popen([binary, "chat", "--no-history", "--rate", "0", "--max-conns", str(n + 100),
                          "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+) \(", p.stderr.readline()).group(1))
        base = rss_mib(p.pid)
        socks = []
        payload = b"".join(b"%s\n" % (b"z" * 4000) for _ in range(20))
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"/join room%d\n" % i + payload)
            s.setblocking(False)
            socks.append(s)
            drain(socks[-50:])  # read what the server sends, so no client is a slow reader
        deadline = time.time() + 10
        while time.time() < deadline:
            drain(socks)
            time.sleep(0.2)
        during = rss_mib(p.pid)
        for s in socks:
            s.close()
        time.sleep(3)
        after = rss_mib(p.pid)
        print(f"{os.path.basename(binary)} ({binary}), {n} clients: RSS {base} MiB at start, "
              f"{during} MiB all connected, {after} MiB after all left")
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[2])
    for binary in [sys.argv[1]] + sys.argv[3:]:
        measure(binary, n)
