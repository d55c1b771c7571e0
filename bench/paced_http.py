#!/usr/bin/env python3
"""A file server for bench/remote.sh whose every connection is paced by the kernel to at most
RATE bytes/s (SO_MAX_PACING_RATE on the accepted socket): a network where each connection is
limited, as a long or shared link is. nginx's limit_rate cannot stand in for it: it lets every
request send its first second's worth at full speed, and these requests are a few MiB.

Usage: paced_http.py ROOT PORT RATE     (RATE in bytes/s)

Serves the files under ROOT on 127.0.0.1:PORT: GET (whole or one "bytes=A-B" range) and HEAD,
HTTP/1.1 with keep-alive; bodies go out by sendfile, so Python costs little per byte.
"""

import http.server
import os
import re
import socket
import socketserver
import sys

ROOT, PORT, RATE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        self.request.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, RATE)
        super().setup()

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        self.serve(body=True)

    def serve(self, body):
        path = os.path.realpath(os.path.join(ROOT, self.path.split("?")[0].lstrip("/")))
        if not path.startswith(os.path.realpath(ROOT) + "/") or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(path)
        first, last, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            first, status = int(m.group(1)), 206
            last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if first > last:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self.wfile.flush()
        if body:
            with open(path, "rb") as f:
                self.request.sendfile(f, first, last - first + 1)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
