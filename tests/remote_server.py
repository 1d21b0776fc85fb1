#!/usr/bin/env python3
"""A small web server for vmimage's remote tests (tests/it/remote.rs).

Serves the files of one directory with HEAD, GET and single `Range: bytes=A-B` requests
(206 with Content-Range), Last-Modified and an ETag from the file's length and mtime, over
HTTPS when given a certificate and key. Misbehaves on request, to test the client's errors:

  --fault stall     send the headers and half the body, then nothing (never close)
  --fault truncate  send the headers and half the body, then close the connection
  --fault error500  answer every GET with 500 Internal Server Error
  --fault etag-changes  give every answer a new ETag (the object changes between requests)

With --forward PORT it serves no files: it terminates TLS (--cert, --key) and forwards each
connection's bytes, untouched, to 127.0.0.1:PORT (an HTTPS front for s3s-fs, which serves plain
HTTP only; SigV4 signatures cover the Host header the client sent, which passes through).

Writes the port it listens on to --port-file (bind to port 0, no race) and one line per
request ("METHOD PATH RANGE") to --log.
"""

import argparse
import email.utils
import http.server
import os
import socket
import ssl
import sys
import threading
import time


def forward(args):
    """TLS in, plain TCP out to 127.0.0.1:args.forward, one thread per direction."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(tmp, args.port_file)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(client):
        try:
            tls = context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            # A client that does not trust the certificate hangs up in the handshake.
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", args.forward))
        threading.Thread(target=pump, args=(upstream, tls), daemon=True).start()
        pump(tls, upstream)

    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--forward", type=int)
    parser.add_argument("--fault", choices=["stall", "truncate", "error500", "etag-changes"])
    args = parser.parse_args()
    if args.forward:
        forward(args)
        return
    root = os.path.abspath(args.dir)
    answers = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def record(self):
            if args.log:
                with open(args.log, "a") as log:
                    log.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")

        def target(self):
            path = os.path.normpath(os.path.join(root, self.path.split("?")[0].lstrip("/")))
            if not path.startswith(root + os.sep) or not os.path.isfile(path):
                return None
            return path

        def do_HEAD(self):
            self.record()
            self.answer(body=False)

        def do_GET(self):
            self.record()
            if args.fault == "error500":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.answer(body=True)

        def answer(self, body):
            path = self.target()
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            st = os.stat(path)
            size = st.st_size
            start, end, status = 0, size, 200
            spec = self.headers.get("Range")
            if spec and spec.startswith("bytes="):
                a, _, b = spec[len("bytes="):].partition("-")
                if a:
                    start = int(a)
                    end = min(int(b) + 1, size) if b else size
                else:
                    start = max(size - int(b), 0)
                if start >= size or start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            answers[0] += 1
            version = answers[0] if args.fault == "etag-changes" else 0
            self.send_header("ETag", f'"{size:x}-{st.st_mtime_ns:x}-{version}"')
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if not body:
                return
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start
                if args.fault in ("stall", "truncate"):
                    left //= 2
                while left > 0:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            self.wfile.flush()
            if args.fault == "stall":
                time.sleep(3600)
            if args.fault == "truncate":
                self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
