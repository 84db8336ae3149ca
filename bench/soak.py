#!/usr/bin/env python3
"""Soak: mixed chat load for a fixed time, sampling the server's memory and descriptors.

    bench/soak.py --tcp 127.0.0.1:9003 --web 127.0.0.1:9080 --pid PID --duration 3600 --sample 60

The load, all on loopback, bounded in clients and in time:
  - a resident crowd (TCP and WebSocket) that stays connected and talks now and then;
  - churners that connect (TCP or WebSocket), take a nick, join a room, talk, change nick, part,
    join another room and leave, over and over;
  - stalled readers that connect, join the busiest room and never read (the server must drop
    them by its send-queue limit, not keep their backlog);
  - a burst of /history and /who requests.
Every SAMPLE seconds it prints the server's RSS (KiB) and open descriptors. At the end, once every
client has left, it checks that memory stayed flat after warm-up (the first fifth of the run: the
highest later sample within 1.5x + 16 MiB of the warm-up's) and that the descriptors are back to
where they started (within 4), and exits 1 if not. Prints a JSON summary last (--json-out FILE
also writes it).

The WebSocket client is written here (handshake, masked text frames, close) because python3's
standard library has none and the soak must run with Debian's python3 only.
"""

import argparse
import base64
import json
import os
import random
import socket
import struct
import sys
import threading
import time

STOP = threading.Event()
COUNTS = {"sent": 0, "received_lines": 0, "connects": 0, "errors": 0, "web_connects": 0}
LOCK = threading.Lock()


def count(key, n=1):
    with LOCK:
        COUNTS[key] += n


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Tcp:
    """A line client (what nc is)."""

    def __init__(self, addr, read=True):
        self.sock = socket.create_connection(addr, timeout=10)
        self.sock.settimeout(10)
        count("connects")
        if read:
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while not STOP.is_set():
                data = self.sock.recv(65536)
                if not data:
                    return
                count("received_lines", data.count(b"\n"))
        except OSError:
            return

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")
        count("sent")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Web:
    """A WebSocket client of the chat page's /ws (JSON lines as text messages)."""

    def __init__(self, addr, nick):
        host, port = addr
        self.sock = socket.create_connection(addr, timeout=10)
        self.sock.settimeout(10)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError("refused: " + head.split(b"\r\n")[0].decode(errors="replace"))
        count("web_connects")
        threading.Thread(target=self._drain, args=(head.split(b"\r\n\r\n", 1)[1],), daemon=True).start()
        self.text(json.dumps({"sockit": "chat", "proto": "json", "nick": nick}))

    def _frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def text(self, text):
        self._frame(0x1, text.encode())
        count("sent")

    def send(self, line):
        self.text(json.dumps({"text": line}))

    def _drain(self, pending):
        buf = pending
        try:
            while not STOP.is_set():
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                # Count whole frames (server frames are not masked).
                while len(buf) >= 2:
                    n = buf[1] & 0x7F
                    off = 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n = struct.unpack("!H", buf[2:4])[0]
                        off = 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n = struct.unpack("!Q", buf[2:10])[0]
                        off = 10
                    if len(buf) < off + n:
                        break
                    count("received_lines")
                    buf = buf[off + n:]
        except OSError:
            return

    def close(self):
        try:
            self._frame(0x8, struct.pack("!H", 1000))
            self.sock.close()
        except OSError:
            pass


def guard(fn):
    """Runs a client's loop until STOP, counting errors instead of dying of them."""

    def run(*args):
        while not STOP.is_set():
            try:
                fn(*args)
            except OSError:
                count("errors")
                time.sleep(0.2)

    return run


def resident(addr, web, i, rng):
    c = Web(web, f"res{i}") if web and i % 3 == 0 else Tcp(addr)
    try:
        if isinstance(c, Tcp):
            c.send(f"/nick res{i}")
        while not STOP.is_set():
            time.sleep(rng.uniform(0.5, 3.0))
            c.send(f"resident {i} says {rng.randrange(10**6)}")
    finally:
        c.close()


def churner(addr, web, i, rng):
    n = rng.randrange(10**6)
    use_web = web and rng.random() < 0.3
    c = Web(web, f"ch{i}x{n}") if use_web else Tcp(addr)
    try:
        if not use_web:
            c.send(f"/nick ch{i}x{n}")
        c.send(f"/join room{rng.randrange(8)}")
        for k in range(rng.randrange(1, 6)):
            c.send(f"churner {i} line {k}")
            time.sleep(rng.uniform(0.05, 0.3))
        c.send(f"/nick ch{i}y{n}")
        if rng.random() < 0.3:
            c.send("/history 20")
        if rng.random() < 0.3:
            c.send("/who")
        c.send("/part")
        c.send(f"/join room{rng.randrange(8)}")
        time.sleep(rng.uniform(0.1, 1.0))
        if rng.random() < 0.5:
            c.send("/quit bye")
    finally:
        c.close()


def staller(addr, i, rng):
    c = Tcp(addr, read=False)
    try:
        # Shrink the receive buffer so the backlog shows up at the server quickly.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(f"/nick stall{i}x{rng.randrange(10**6)}")
        deadline = time.time() + rng.uniform(5, 20)
        while time.time() < deadline and not STOP.is_set():
            time.sleep(0.5)
    finally:
        c.close()


def sample(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except (OSError, StopIteration):
        return None, None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tcp", required=True)
    p.add_argument("--web")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--sample", type=float, default=10)
    p.add_argument("--residents", type=int, default=60)
    p.add_argument("--churners", type=int, default=20)
    p.add_argument("--stallers", type=int, default=4)
    p.add_argument("--json-out")
    args = p.parse_args()
    addr = parse_addr(args.tcp)
    web = parse_addr(args.web) if args.web else None
    for a in [addr] + ([web] if web else []):
        if not (a[0].startswith("127.") or a[0] in ("::1", "localhost")):
            sys.exit(f"soak: {a[0]} is not loopback; the soak only loads loopback")

    rss0, fds0 = sample(args.pid)
    if rss0 is None:
        sys.exit(f"soak: no process {args.pid}")
    threads = []
    for i in range(args.residents):
        threads.append(threading.Thread(target=guard(resident), args=(addr, web, i, random.Random(i)), daemon=True))
    for i in range(args.churners):
        threads.append(threading.Thread(target=guard(churner), args=(addr, web, i, random.Random(1000 + i)), daemon=True))
    for i in range(args.stallers):
        threads.append(threading.Thread(target=guard(staller), args=(addr, i, random.Random(2000 + i)), daemon=True))
    for t in threads:
        t.start()
        time.sleep(0.01)

    samples = []
    start = time.time()
    print(f"{'t (s)':>8} {'RSS KiB':>10} {'fds':>6} {'sent':>10} {'received':>12} {'errors':>7}", flush=True)
    while time.time() - start < args.duration:
        time.sleep(min(args.sample, max(0.0, args.duration - (time.time() - start))))
        rss, fds = sample(args.pid)
        if rss is None:
            STOP.set()
            sys.exit("soak: the server died")
        t = time.time() - start
        samples.append({"t": round(t, 1), "rss_kib": rss, "fds": fds})
        with LOCK:
            print(f"{t:8.0f} {rss:10d} {fds:6d} {COUNTS['sent']:10d} {COUNTS['received_lines']:12d} {COUNTS['errors']:7d}", flush=True)
    STOP.set()
    for t in threads:
        t.join(timeout=15)
    # Every client has left: the server gives their descriptors back.
    deadline = time.time() + 15
    rss_end, fds_end = sample(args.pid)
    while fds_end is not None and fds_end > fds0 + 4 and time.time() < deadline:
        time.sleep(0.5)
        rss_end, fds_end = sample(args.pid)

    warm = [s for s in samples if s["t"] <= args.duration / 5] or samples[:1]
    later = [s for s in samples if s["t"] > args.duration / 5] or samples[-1:]
    warm_rss = max(s["rss_kib"] for s in warm)
    later_rss = max(s["rss_kib"] for s in later)
    rss_ok = later_rss <= warm_rss * 1.5 + 16 * 1024
    fds_ok = fds_end is not None and fds_end <= fds0 + 4
    summary = {
        "duration_s": args.duration,
        "rss_start_kib": rss0,
        "rss_warmup_max_kib": warm_rss,
        "rss_after_warmup_max_kib": later_rss,
        "rss_end_kib": rss_end,
        "fds_start": fds0,
        "fds_end": fds_end,
        "fds_max": max(s["fds"] for s in samples) if samples else None,
        "counts": COUNTS,
        "flat": rss_ok,
        "fds_back": fds_ok,
        "samples": samples,
    }
    print(json.dumps(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f)
    if not rss_ok:
        print(f"soak: memory grew after warm-up: {warm_rss} KiB -> {later_rss} KiB", file=sys.stderr)
    if not fds_ok:
        print(f"soak: descriptors not given back: {fds0} at start, {fds_end} at the end", file=sys.stderr)
    sys.exit(0 if rss_ok and fds_ok else 1)


if __name__ == "__main__":
    main()
