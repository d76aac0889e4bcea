"""A TCP proxy on 127.0.0.1 in front of an HTTP server (moto's S3 API), run as its own process by
test_remote.py.

    python cut_proxy.py UPSTREAM_PORT PORT_FILE REQUEST_LOG CUT

Forwards every connection to 127.0.0.1:UPSTREAM_PORT. Each request's line and Range header go to
REQUEST_LOG as ``METHOD PATH RANGE`` (``-`` without one), so a test can see how a client read an
object. The first CUT GETs of each ``.tar`` object that ask for the whole object (no Range) are
cut: the response's head and half of its body are passed on, then both connections are closed,
as a flaky network or a restarted proxy does. It writes its port to PORT_FILE once listening.
"""

import os
import socket
import sys
import threading
from collections import Counter

_METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")


def _recv(sock: socket.socket) -> bytes:
    """The next bytes from ``sock``; b"" once it is closed or reset."""
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def main() -> None:
    upstream, port_file, log_path, cut = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    cuts = Counter()
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1)

    def serve(client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", upstream))
        pending = threading.Event()  # the response now coming is to be cut

        def close_both() -> None:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def requests_in() -> None:
            while True:
                data = _recv(client)
                if not data:
                    break
                if data.startswith(_METHODS):  # a request's head (clients send one per write)
                    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                    method, path = head[0].split(" ")[:2]
                    rng = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("range:")), "-")
                    with lock:
                        log.write(f"{method} {path} {rng}\n")
                        obj = path.split("?", 1)[0]
                        if method == "GET" and rng == "-" and obj.endswith(".tar") and cuts[obj] < cut:
                            cuts[obj] += 1
                            pending.set()
                try:
                    server.sendall(data)
                except OSError:
                    break
            close_both()

        def responses_out() -> None:
            buf, limit, sent = b"", None, 0
            while True:
                data = _recv(server)
                if not data:
                    break
                if pending.is_set():
                    if limit is None:
                        buf += data
                        if b"\r\n\r\n" not in buf:
                            continue
                        head = buf.split(b"\r\n\r\n", 1)[0]
                        length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                                      if h.lower().startswith(b"content-length:"))
                        limit, data, buf = len(head) + 4 + length // 2, buf, b""
                    take = data[: limit - sent]
                    client.sendall(take)
                    sent += len(take)
                    if sent >= limit:
                        close_both()
                        break
                    continue
                try:
                    client.sendall(data)
                except OSError:
                    break
            close_both()

        threading.Thread(target=requests_in, daemon=True).start()
        responses_out()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
