"""The generator's HTTP/1.1 response reader (tritonops.perf.wire) over a real socket pair: responses by
Content-Length, chunked, to the close, split across many reads, and the failures it must tell apart
(a kept-alive connection closed before the response is retried by the sender; one closed inside a
response is an error)."""

from __future__ import annotations

import socket
import threading

import pytest

from tritonops.perf import wire
from tritonops.perf.wire import MAX_HEADER_BYTES, ClosedBeforeResponse, read_http_response


def _served(data: bytes, *, pieces: int = 1, close: bool = True) -> socket.socket:
    """The reading end of a socket pair whose other end writes ``data`` in ``pieces`` writes."""
    a, b = socket.socketpair()
    a.settimeout(5)

    def write() -> None:
        step = max(1, -(-len(data) // pieces))
        for k in range(0, len(data), step):
            b.sendall(data[k:k + step])
        if close:
            b.close()

    threading.Thread(target=write, daemon=True).start()
    return a


def test_body_by_content_length_and_keep_alive():
    body = b'{"model_name":"m"}'
    sock = _served(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                   + body + b"HTTP/1.1 200 OK\r\n", close=False)
    assert read_http_response(sock) == (200, body, True)


def test_a_response_split_over_many_reads():
    body = bytes(range(256)) * 40
    sock = _served(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body) + body, pieces=97)
    assert read_http_response(sock) == (400, body, True)


def test_connection_close_and_http_1_0_end_keep_alive():
    sock = _served(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    assert read_http_response(sock) == (200, b"ok", False)
    sock = _served(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert read_http_response(sock) == (200, b"ok", False)


def test_chunked_body():
    sock = _served(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n",
                   pieces=13)
    assert read_http_response(sock) == (200, b"hello, world", True)


def test_body_without_length_runs_to_the_close():
    sock = _served(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert read_http_response(sock) == (200, b"all of it", False)


def test_closed_before_any_byte_is_told_apart_from_closed_inside_a_response():
    with pytest.raises(ClosedBeforeResponse):
        read_http_response(_served(b""))
    with pytest.raises(ConnectionError, match="within a response's headers") as e:
        read_http_response(_served(b"HTTP/1.1 200 OK\r\nContent-Le"))
    assert not isinstance(e.value, ClosedBeforeResponse)
    with pytest.raises(ConnectionError, match="within a response's body"):
        read_http_response(_served(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"))


def test_what_is_not_http_is_an_error():
    with pytest.raises(ConnectionError, match="not an HTTP response"):
        read_http_response(_served(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with pytest.raises(ConnectionError, match="headers exceed"):
        read_http_response(_served(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADER_BYTES // 6 + 1), close=False))


# ------------------------------------------------------------------------------------------ HTTP/2 for gRPC
def test_the_grpc_header_block_decodes_to_what_a_grpc_client_sends():
    """Decoded by the hpack package (the reference HPACK decoder), not by this code."""
    import hpack

    block = wire.grpc_header_block("/inference.GRPCInferenceService/ModelInfer", "127.0.0.1:8001")
    assert hpack.Decoder().decode(block) == [
        (":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8001"), ("content-type", "application/grpc"), ("te", "trailers")]
    long_path = "/" + "p" * 300  # lengths past the 7-bit prefix take continuation bytes
    assert hpack.Decoder().decode(wire.grpc_header_block(long_path, "h:1"))[2] == (":path", long_path)


def test_frames_are_split_whole_and_the_rest_kept():
    frames = (wire.h2_frame(wire.HEADERS, wire.END_HEADERS, 1, b"abc") + wire.h2_settings({4: 2**31 - 1})
              + wire.h2_frame(wire.DATA, wire.END_STREAM, 3, b"x" * 70000))
    got, rest = wire.split_frames(frames[:-10])
    assert [(k, f, s, len(p)) for k, f, s, p in got] == [(wire.HEADERS, wire.END_HEADERS, 1, 3),
                                                         (wire.SETTINGS, 0, 0, 6)]
    assert rest == frames[9 + 3 + 9 + 6:-10]
    got, rest = wire.split_frames(rest + frames[-10:])
    assert got == [(wire.DATA, wire.END_STREAM, 3, b"x" * 70000)] and rest == b""
    assert wire.parse_settings(wire.split_frames(wire.h2_settings({3: 100, 5: 16384}))[0][0][3]) == {3: 100, 5: 16384}


def test_padding_and_priority_fields_are_removed():
    assert wire.unpad(wire.PADDED, b"\x03body...") == b"body"
    assert wire.unpad(wire.PADDED | wire.PRIORITY_FLAG, b"\x02\x00\x00\x00\x01\x10block..", headers=True) == b"block"
    assert wire.unpad(0, b"plain") == b"plain"


def test_a_grpc_message_is_length_prefixed():
    assert wire.grpc_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert wire.h2_window_update(0, 5) == b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x05"
