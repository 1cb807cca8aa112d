"""The load generator's wire: reading HTTP/1.1 responses off a socket with no client library.

The generator (``tritonops.perf.locustfile``) writes prepared requests as bytes and reads the
responses here: only the status line and headers are parsed, the body is read by its length. No
import here has side effects (the locustfile's gevent and gRPC set-up stays there), so the tests
read responses through a plain socket pair."""

from __future__ import annotations

from typing import Any


class ClosedBeforeResponse(ConnectionError):
    """The server closed a connection before any byte of the response."""


MAX_HEADER_BYTES = 64 * 1024


def read_http_response(sock: Any) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response read from ``sock``: the body by
    ``Content-Length``, chunked, or up to the connection's close."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            if buf:
                raise ConnectionError("the server closed the connection within a response's headers")
            raise ClosedBeforeResponse("the server closed the connection before responding")
        buf += chunk
        if len(buf) > MAX_HEADER_BYTES:
            raise ConnectionError(f"a response's headers exceed {MAX_HEADER_BYTES} bytes")
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    keep = parts[0] != "HTTP/1.0"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep = value != "close" if value in ("close", "keep-alive") else keep
        elif name == "transfer-encoding":
            chunked = "chunked" in value
    rest = buf[end + 4:]
    if chunked:
        return status, _read_chunked(sock, rest), keep
    if length is None:  # no length: the body runs to the connection's close
        while chunk := sock.recv(65536):
            rest += chunk
        return status, rest, False
    while len(rest) < length:
        chunk = sock.recv(max(65536, length - len(rest)))
        if not chunk:
            raise ConnectionError("the server closed the connection within a response's body")
        rest += chunk
    return status, rest[:length], keep


def _read_chunked(sock: Any, buf: bytes) -> bytes:
    body = b""
    while True:
        while (eol := buf.find(b"\r\n")) < 0:
            buf += _recv_some(sock)
        size = int(buf[:eol].split(b";", 1)[0], 16)
        buf = buf[eol + 2:]
        while len(buf) < size + 2:
            buf += _recv_some(sock)
        if size == 0:  # no trailers expected from Triton: the final CRLF ends the response
            return body
        body += buf[:size]
        buf = buf[size + 2:]


def _recv_some(sock: Any) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection within a chunked body")
    return bytes(chunk)
