#!/usr/bin/env python3
"""The tutorials' chat room, the Python baseline of bench/chat.sh: a thread per client, a shared
list of sockets under a lock, every line sent on to everyone else with a blocking sendall.

    python3 bench/chat_threads.py 127.0.0.1:9104

Greets each client with one line (so a load generator knows it was accepted); listens with a
backlog of 1024 (socketserver's default of 5 would measure the backlog, not the room).
"""
import socket
import sys
import threading

clients = []
lock = threading.Lock()


def serve(conn, addr):
    name = f"{addr[0]}:{addr[1]}"
    conn.sendall(f"welcome {name}\n".encode())
    with lock:
        clients.append(conn)
    buf = b""
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = b"<" + name.encode() + b"> " + line + b"\n"
                with lock:
                    for c in clients:
                        if c is not conn:
                            try:
                                c.sendall(msg)
                            except OSError:
                                pass
    except OSError:
        pass
    finally:
        with lock:
            clients.remove(conn)
        conn.close()


def main(addr):
    host, _, port = addr.rpartition(":")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host or "127.0.0.1", int(port)))
    srv.listen(1024)
    print(f"chat_threads: listening on {srv.getsockname()[0]}:{srv.getsockname()[1]}",
          file=sys.stderr, flush=True)
    while True:
        conn, peer = srv.accept()
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9104")
    except KeyboardInterrupt:
        pass
