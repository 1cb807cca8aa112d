"""tritonclient HTTP and gRPC clients for one validation, and what their errors mean."""

from __future__ import annotations

import contextlib

from tritonops.errors import ServerError
from tritonops.validate.report import ValidateOptions


class Clients:
    def __init__(self, options: ValidateOptions) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http_mod = httpclient
        self.grpc_mod = grpcclient
        self.options = options
        self.http = httpclient.InferenceServerClient(
            options.http_url, connection_timeout=min(10.0, options.timeout_s), network_timeout=options.timeout_s)
        self.grpc = grpcclient.InferenceServerClient(options.grpc_url)
        # The message limit mimics a production client's, which matters for inference messages;
        # metadata and statistics go through the unlimited client.
        self.grpc_infer = self.grpc
        if options.grpc_max_message_bytes is not None:
            limit = options.grpc_max_message_bytes
            self.grpc_infer = grpcclient.InferenceServerClient(options.grpc_url, channel_args=[
                ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])

    def close(self) -> None:
        for c in {id(x): x for x in (self.http, self.grpc, self.grpc_infer)}.values():
            with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
                c.close()


def status_of(e: BaseException) -> str:
    status = getattr(e, "status", None)
    return str(status() if callable(status) else "") or ""


def message_of(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    return (text or type(e).__name__).strip().splitlines()[0] if (text or "").strip() else type(e).__name__


def unreachable(protocol: str, url: str, e: BaseException) -> ServerError:
    """A clear error for a failed first contact: nothing listening, a non-Triton port, or no such host."""
    default = {"HTTP": 8000, "gRPC": 8001}[protocol]
    flag = "--http-port" if protocol == "HTTP" else "--grpc-port"
    text = f"{type(e).__name__}: {message_of(e)}"
    refused = isinstance(e, ConnectionRefusedError) or "Connection refused" in text
    if refused:
        return ServerError(
            f"cannot reach Triton's {protocol} endpoint at {url}: connection refused",
            f"start a server (tritonops serve REPOSITORY) or check --url and {flag} (Triton's default is {default})",
        )
    if "Name or service not known" in text or "gaierror" in text or "DNS resolution failed" in text:
        return ServerError(f"cannot reach Triton's {protocol} endpoint at {url}: unknown host",
                           "check the host name given with --url")
    if "timed out" in text.lower() or "DEADLINE_EXCEEDED" in text:
        return ServerError(f"Triton's {protocol} endpoint at {url} did not answer in time",
                           "check that the server is up and the port is right; a firewall may drop the connection")
    other = "gRPC" if protocol == "HTTP" else "HTTP"
    return ServerError(
        f"{url} answered, but not as Triton's {protocol} endpoint ({short(text)})",
        f"check {flag}: is {url} the {other} or metrics port? Triton's {protocol} default is {default}",
    )


def short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


GRPC_LIMIT_HINT = ("send a smaller batch (--batch-size), use HTTP for large tensors, or raise the client's limit "
                    "(--grpc-max-message-size / the client's grpc.max_receive_message_length)")


def infer_error(protocol: str, e: BaseException) -> tuple[str, str]:
    """(detail, hint) for a failed inference."""
    status = status_of(e)
    msg = short(message_of(e), 300)
    if "RESOURCE_EXHAUSTED" in status:
        return f"gRPC message size limit exceeded (RESOURCE_EXHAUSTED: {msg})", GRPC_LIMIT_HINT
    if "UNAVAILABLE" in status or isinstance(e, ConnectionError):
        return f"the server went away ({msg})", "check the server log; the server or the model may have crashed"
    return f"inference failed: {msg}", "the server's error is above; check the inputs and the server log"
