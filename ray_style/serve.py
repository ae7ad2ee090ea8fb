"""`ray-style status JOB --serve`: the job's report folder over HTTP on localhost, read-only.

Only regular files inside ``JOB/report/`` are served (``index.html`` at ``/``): no listings,
no dotfiles (our atomic writes' temp files are dotfiles), nothing a symlink leads to outside
the folder, no file with a second name (a hard link may be a file from anywhere), GET and HEAD
only. Every response forbids scripts by Content-Security-Policy, so even a page or SVG someone
planted in the folder cannot run code in the browser. Requests must name this server as their
one Host, which keeps DNS-rebinding pages from reading it. A connection that sends nothing for
:data:`IDLE_S` seconds is closed; a client that goes away is no error. Serving writes nothing:
a stopped job's page is made in memory.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from .errors import InputError, JobError
from .job import MARKER, Layout, is_job_dir

CSP = ("default-src 'none'; img-src 'self' data:; media-src 'self' data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PLACEHOLDER = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta http-equiv=\"refresh\" content=\"2\"><link rel=\"icon\" href=\"data:,\">"
               "<title>ray-style: waiting</title></head><body style=\"font:14px system-ui,sans-serif\">"
               "<p id=\"waiting\">No page yet: the job writes report/index.html when its first frame "
               "finishes. This page reloads every 2 s.</p></body></html>\n").encode()
IDLE_S = 30
TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".png": "image/png",
         ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".mp4": "video/mp4", ".svg": "image/svg+xml",
         ".csv": "text/csv; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


def report_file(report: Path, url_path: str) -> Path | None:
    """The file under ``report`` that ``url_path`` names, or None when it may not be served.

    Refused: dot segments and dotfiles, backslashes and NULs, anything that resolves (through
    symlinks) outside ``report``, anything but a regular file with one name.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    parts = [part for part in path.split("/") if part]
    if any(part.startswith(".") for part in parts):
        return None
    if not parts:
        parts = ["index.html"]
    if report.is_symlink() or not report.is_dir():
        return None
    root = os.path.realpath(report)
    target = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, target]) != root or not os.path.isfile(target) or os.stat(target).st_nlink != 1:
        return None
    return Path(target)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=`` range (video seeking), or None for the whole."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            count = int(last)
            return (max(0, size - count), size - 1) if count > 0 else None
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (start, end) if 0 <= start <= end else None


class ReportHandler(BaseHTTPRequestHandler):
    server_version = "ray-style"
    sys_version = ""
    report: Path  # set on the subclass made by make_server
    allowed_hosts: frozenset
    log: Callable[[str], None] | None = None
    index: bytes | None = None  # the page served at / instead of report/index.html
    timeout = IDLE_S  # socketserver closes a connection idle this long

    def __getattr__(self, name: str):
        # http.server answers an unknown method 501; any method but GET and HEAD is 405 here.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].lower() not in self.allowed_hosts:
            return self._send_status(HTTPStatus.FORBIDDEN)
        if self.index is not None and urllib.parse.urlsplit(self.path).path in ("/", "/index.html"):
            return self._send_bytes(self.index, TYPES[".html"], body)
        target = report_file(self.report, self.path)
        if target is None:
            if urllib.parse.urlsplit(self.path).path in ("/", "/index.html") and not (self.report / "index.html").exists():
                return self._send_bytes(PLACEHOLDER, TYPES[".html"], body)
            return self._send_status(HTTPStatus.NOT_FOUND)
        try:
            handle = open(target, "rb")
        except OSError:
            return self._send_status(HTTPStatus.NOT_FOUND)
        with handle:
            size = os.fstat(handle.fileno()).st_size
            span = _byte_range(self.headers.get("Range"), size)
            first, last = span if span else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
            self._headers(TYPES.get(target.suffix.lower(), "application/octet-stream"), last - first + 1)
            self.send_header("Accept-Ranges", "bytes")
            if span:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if body:
                handle.seek(first)
                _copy(handle, self.wfile, last - first + 1)

    def _headers(self, content_type: str, length: int) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))

    def _send_bytes(self, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self._headers(content_type, len(data))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send_status(self, status: HTTPStatus, extra: dict | None = None) -> None:
        data = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self._headers("text/plain; charset=utf-8", len(data))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        if self.log is not None:
            self.log(f"{self.address_string()} {format % args}")


def _copy(source, target, count: int) -> None:
    while count > 0:
        block = source.read(min(count, 1 << 16))
        if not block:
            break
        target.write(block)
        count -= len(block)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(f"--host {host}: the job page is served on this machine only; use 127.0.0.1, ::1 or "
                         "localhost (reach it from elsewhere through an SSH tunnel: ssh -L PORT:127.0.0.1:PORT)")


def make_server(job_root, port: int = 8000, host: str = "127.0.0.1",
                log: Callable[[str], None] | None = None, index: bytes | None = None) -> ThreadingHTTPServer:
    """A bound, not yet serving, server for ``job_root``'s report (``port`` 0: any free port,
    then read ``server.server_address[1]``); :class:`InputError` when the port is taken.
    ``index``: the page to serve at ``/`` instead of the report's own."""
    root = Path(job_root)
    if not is_job_dir(root):
        raise JobError(f"{root} is not a ray-style job directory (no {MARKER} marker)")
    _check_loopback(host)
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: use 1…65535, or 0 for any free port")

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client that left: no error
                super().handle_error(request, client_address)

    try:
        server = Server((host, port), ReportHandler)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use: pick another with --port, or --port 0 for any "
                             "free port") from None
        if error.errno == errno.EACCES:
            raise InputError(f"port {port} on {host} needs privileges: use a port above 1023") from None
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    bound = server.server_address[1]
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    handler = type("Handler", (ReportHandler,), {
        "report": Layout(root).report, "log": staticmethod(log) if log else None, "index": index,
        "allowed_hosts": frozenset(f"{name}:{bound}" for name in names) | ({*names} if bound == 80 else set())})
    server.RequestHandlerClass = handler
    return server


def serve(job_root, port: int = 8000, host: str = "127.0.0.1", ready=None, stop: threading.Event | None = None,
          log: Callable[[str], None] | None = None, index: bytes | None = None) -> None:
    """Serve ``job_root``'s report until Ctrl-C (or ``stop`` is set); blocking.

    ``ready``: called with the bound port once listening (a ``threading.Event`` is set, with
    the port in its ``port`` attribute). ``log``: receives one line per request.
    """
    server = make_server(job_root, port, host, log, index)
    bound = server.server_address[1]
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True).start()
    try:
        if isinstance(ready, threading.Event):
            ready.port = bound
            ready.set()
        elif ready is not None:
            ready(bound)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a user stops the server: not an error
    finally:
        server.server_close()


__all__ = ["serve", "make_server", "report_file", "CSP", "HEADERS"]
