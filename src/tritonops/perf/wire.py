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


# --------------------------------------------------------------------------------------- HTTP/2 for gRPC
# The gRPC sender speaks HTTP/2 itself (RFC 9113), on prepared frames: a request is one HEADERS frame
# (a fixed header block) and DATA frames holding the length-prefixed, already serialized
# ModelInferRequest. Only the response's header blocks are decoded (HPACK, with the hpack package,
# which keeps the server's dynamic table); its message is counted, not parsed.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
H2_DEFAULT_WINDOW = 65535
H2_DEFAULT_FRAME = 16384
H2_MAX_WINDOW = 2**31 - 1
CANCEL = 0x8


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return (len(payload).to_bytes(3, "big") + bytes((kind, flags)) + (stream & 0x7FFFFFFF).to_bytes(4, "big")
            + payload)


def h2_settings(values: dict[int, int]) -> bytes:
    return h2_frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


def h2_window_update(stream: int, increment: int) -> bytes:
    return h2_frame(WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def parse_settings(payload: bytes) -> dict[int, int]:
    return {int.from_bytes(payload[k:k + 2], "big"): int.from_bytes(payload[k + 2:k + 6], "big")
            for k in range(0, len(payload) - 5, 6)}


def split_frames(buf: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """The whole frames at the start of ``buf`` as (type, flags, stream, payload), and the rest."""
    frames = []
    pos, end = 0, len(buf)
    while end - pos >= 9:
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if end - pos - 9 < length:
            break
        stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        frames.append((buf[pos + 3], buf[pos + 4], stream, buf[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return frames, buf[pos:]


def unpad(flags: int, payload: bytes, *, headers: bool = False) -> bytes:
    """A DATA or HEADERS frame's payload without its padding (and a HEADERS frame's priority fields)."""
    if flags & PADDED:
        payload = payload[1:len(payload) - payload[0]]
    if headers and flags & PRIORITY_FLAG:
        payload = payload[5:]
    return payload


def _hpack_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _hpack_int(len(raw), 7) + raw  # no Huffman coding


def grpc_header_block(path: str, authority: str) -> bytes:
    """The request's HPACK header block, the same bytes for every request: indexed :method POST and
    :scheme http, the rest literal without indexing (so the server's dynamic table is never touched)."""
    def literal(static_index: int, value: str) -> bytes:  # literal without indexing, indexed name
        return _hpack_int(static_index, 4) + _hpack_string(value)

    return (bytes((0x80 | 3, 0x80 | 6)) + literal(4, path) + literal(1, authority) + literal(31, "application/grpc")
            + b"\x00" + _hpack_string("te") + _hpack_string("trailers"))


def grpc_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
