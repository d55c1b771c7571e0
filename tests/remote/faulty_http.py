#!/usr/bin/env python3
"""A small HTTP/1.1 file server for vdmount's remote tests that misbehaves on purpose.

Usage: faulty_http.py ROOT PORT SCHEDULE [STALL_SECONDS]

Serves the files under ROOT on 127.0.0.1:PORT with Range support (single ranges), keeping
connections alive. Request number i (from 0) gets the fault SCHEDULE[i % len(SCHEDULE)], a
comma-separated list of:
  ok       a correct answer
  cut      a correct head, then half the body, then the connection is closed
  503      503 Service Unavailable
  stall    nothing for STALL_SECONDS (default 30), then the connection is closed
  reset    the connection is closed before any answer
  norange  200 with the whole file, as a server without Range support does
  badrange 206 whose Content-Range names another range than the one asked for
  403      403 Forbidden
On each request it prints "FAULT <name> <path> <range>" to standard output (flushed), so a
test can count the faults it injected.
"""

import http.server
import os
import re
import socketserver
import sys
import threading
import time

ROOT, PORT, SCHEDULE = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
STALL = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
counter = 0
lock = threading.Lock()


def next_fault(path, rng):
    """The fault for this request, logged as one line in one write: print() from several
    threads writes the text and the newline apart, and two lines could run together."""
    global counter
    with lock:
        fault = SCHEDULE[counter % len(SCHEDULE)]
        counter += 1
        sys.stdout.write(f"FAULT {fault} {path} {rng}\n")
        sys.stdout.flush()
    return fault


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = os.path.normpath(os.path.join(ROOT, self.path.split("?")[0].lstrip("/")))
        rng = self.headers.get("Range", "")
        fault = next_fault(self.path, rng)
        if not path.startswith(os.path.abspath(ROOT)) or not os.path.isfile(path):
            return self.answer(404, b"not found\n")
        if fault == "503":
            return self.answer(503, b"busy\n")
        if fault == "403":
            return self.answer(403, b"no\n")
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "stall":
            time.sleep(STALL)
            self.close_connection = True
            return
        with open(path, "rb") as f:
            data = f.read()
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng)
        if fault == "norange" or not m:
            return self.answer(200, data)
        first, last = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        if first >= len(data):
            return self.answer(416, b"")
        body = data[first : last + 1]
        # badrange claims one byte less than it sends (a proxy mixing answers up would do worse).
        shown = (first, last - 1) if fault == "badrange" and last > first else (first, last)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {shown[0]}-{shown[1]}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"fixed"')
        self.end_headers()
        if fault == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client dropping a connection it got a fault on is the point, not news.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


Server(("127.0.0.1", PORT), Handler).serve_forever()
