"""A file server on 127.0.0.1 with faults, run as its own process by test_remote.py.

    python fault_http_server.py DIR PORT_FILE CUT_REQUESTS

Serves the files of DIR like ``http.server``. The first CUT_REQUESTS GETs of each ``.tar`` announce
the whole size in Content-Length, send half of the bytes and close the connection: a transfer cut
mid-shard, as a flaky network or a restarted proxy does. Further GETs are served whole. It writes
the port it listens on to PORT_FILE once it accepts connections.
"""

import http.server
import os
import sys
from collections import Counter


def main() -> None:
    root, port_file, cut = sys.argv[1], sys.argv[2], int(sys.argv[3])
    gets = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def log_message(self, *a):  # quiet: the test reads the client's retry log instead
            pass

        def do_GET(self):
            path = self.translate_path(self.path)
            if not path.endswith(".tar") or not os.path.isfile(path):
                return super().do_GET()
            gets[path] += 1
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if gets[path] <= cut:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the connection drops with the transfer half done
                return
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
