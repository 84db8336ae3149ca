#!/usr/bin/env python3
"""The tutorial port scanner: 100 threads take ports from a queue and try a blocking
connect_ex() on each, with a timeout; every port that connects is printed as open.

    python3 bench/scan_threads.py 127.0.0.1 1 65535

It is the scanner a sockets tutorial teaches, kept as it is taught: it does not check whether a
connection reached itself (a connect from an ephemeral port to the same port of a local address
with no listener meets itself), so such a self-connect is printed as an open port. Prints one open
port per line, sorted, on stdout.
"""
import queue
import socket
import sys
import threading

host = sys.argv[1]
first, last = int(sys.argv[2]), int(sys.argv[3])
THREADS = 100
ports = queue.Queue()
for p in range(first, last + 1):
    ports.put(p)
found = []
lock = threading.Lock()


def worker():
    while True:
        try:
            port = ports.get_nowait()
        except queue.Empty:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            with lock:
                found.append(port)
        s.close()


threads = [threading.Thread(target=worker) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for p in sorted(found):
    print(p)
