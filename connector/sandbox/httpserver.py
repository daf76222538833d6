"""A threaded loopback HTTP(S) server for WSGI apps, with generic faults.

``SandboxHttpServer(app, ca=ca)`` listens on ``127.0.0.1`` on a free port, speaks
HTTP/1.1 with keep-alive over TLS (certificate from :class:`SandboxCA`), and runs
each request through the generic fault knobs before the app sees it:

- ``drop``: the request is read, then the connection is closed without an answer
  (the client sees a connection reset / remote disconnect);
- ``drop_after``: the app handles the request (a write is applied), then the
  connection is closed without the answer: the client cannot know it worked;
- ``http500`` / ``http502`` / ``http503`` / ``http504``: that status with a short body;
- ``slow``: the answer is delayed by the knob's ``seconds`` (default 2 s).

The TLS handshake runs in the connection's own thread, so a stuck client never
blocks the accept loop.
"""

from __future__ import annotations

import io
import socket
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote

import structlog

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.tls import SandboxCA

log = structlog.get_logger(__name__)

IDLE_TIMEOUT_SECONDS = 120.0
"""A keep-alive connection idle this long is closed by the server (IIS's default)."""

SLOW_DEFAULT_SECONDS = 2.0
"""Delay of the ``slow`` fault when the knob gives no ``seconds``."""

MAX_BODY_BYTES = 512 * 1024 * 1024
"""Largest request body the sandbox accepts."""

WsgiApp = Callable[[dict, Callable], Any]


class _DropConnection(Exception):
    """Raised inside the handler to close the socket without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # reply at once: without it every response waits ~40 ms for the client's delayed ACK
    disable_nagle_algorithm = True
    server: "_Server"
    timeout = IDLE_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("sandbox_http", peer=self.client_address[0], message=format % args)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _DropConnection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout):
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise _DropConnection()
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _DropConnection()
        return self.rfile.read(length) if length else b""

    def _environ(self, body: bytes) -> dict:
        path, _, query = self.path.partition("?")
        env = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.server.tls_context else "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "sandbox.faults": self.server.faults,
        }
        for key, value in self.headers.items():
            name = "HTTP_" + key.upper().replace("-", "_")
            if name in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            env[name] = f"{env[name]},{value}" if name in env else value
        return env

    def _dispatch(self) -> None:
        body = self._read_body()
        faults = self.server.faults
        if faults.take("drop"):
            raise _DropConnection()
        if faults.take("slow"):
            time.sleep(faults.seconds("slow", SLOW_DEFAULT_SECONDS))
        for status in (500, 502, 503, 504):
            if faults.take(f"http{status}"):
                line = f"{status} {HTTPStatus(status).phrase}"
                self._send(line, [("Content-Type", "text/plain")], [f"{line} (sandbox fault)\n".encode()])
                return
        drop_after = faults.take("drop_after")
        self._run_app(self._environ(body), drop_after)

    def _run_app(self, environ: dict, drop_after: bool = False) -> None:
        state: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            state["status"], state["headers"] = status, list(headers)
            return lambda data: state.setdefault("extra", []).append(data)

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks = list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except _DropConnection:
            raise
        except Exception:
            log.exception("sandbox_app_error", path=environ["PATH_INFO"])
            self._send("500 Internal Server Error", [("Content-Type", "text/plain")],
                       [b"sandbox app error\n"])
            return
        if drop_after:
            raise _DropConnection()
        self._send(state["status"], state["headers"], state.get("extra", []) + chunks)

    def _send(self, status: str, headers: list, chunks: list[bytes]) -> None:
        code, _, reason = status.partition(" ")
        payload = b"".join(chunks)
        self.send_response(int(code), reason or None)
        for name, value in headers:
            if name.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: WsgiApp, tls_context: ssl.SSLContext | None, faults: FaultKnobs) -> None:
        self.app = app
        self.tls_context = tls_context
        self.faults = faults
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        wrapped = None
        try:
            if self.tls_context is not None:
                request.settimeout(IDLE_TIMEOUT_SECONDS)
                try:
                    wrapped = self.tls_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.debug("sandbox_tls_handshake_failed", peer=client_address[0], error=str(exc))
                    return
                with self._conns_lock:
                    self._conns.add(wrapped)
            super().finish_request(wrapped or request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)
                if wrapped is not None:
                    self._conns.discard(wrapped)
            if wrapped is not None:
                try:
                    wrapped.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                wrapped.close()

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox_connection_error", peer=client_address[0], exc_info=True)


class SandboxHttpServer:
    """Serve a WSGI ``app`` on ``https://127.0.0.1:<free port>`` (or plain HTTP)."""

    def __init__(self, app: WsgiApp, *, ca: SandboxCA | None, tls: bool = True,
                 faults: FaultKnobs | None = None) -> None:
        if tls and ca is None:
            raise ValueError("SandboxHttpServer needs a SandboxCA when tls=True")
        self.app = app
        self.faults = faults if faults is not None else FaultKnobs()
        self.tls = tls
        self._server = _Server(app, ca.server_context() if tls and ca else None, self.faults)
        self._thread: threading.Thread | None = None
        self.port: int = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "SandboxHttpServer":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                name=f"sandbox-http-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> "SandboxHttpServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
