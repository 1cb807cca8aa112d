"""The one client of a running Triton: an HTTP + gRPC pair (tritonclient) behind one small API.

:class:`TritonClient` gives the repository index, model config (as ``model_config_pb2.ModelConfig``),
metadata, readiness, statistics, load/unload (with a config override) and inference per protocol:
``"http-json"`` (JSON tensors), ``"http-binary"`` (the binary tensor extension) and ``"grpc"``.
validate, deploy's roll-out and canary, perf's target and load test, and the locustfile (inside
locust's gevent process) all talk to Triton through it.

Errors: tritonclient raises ``InferenceServerException`` (with an HTTP status or gRPC code) or plain
socket errors. :func:`classify` turns any of them into a :class:`CallError` (status, first line,
whether the server was unreachable); :func:`unreachable` makes the ServerError (with a hint) for a
failed first contact, :func:`infer_error` the detail and hint of a failed inference.

Endpoints are ``host:port`` without a scheme, what tritonclient and perf_analyzer take;
:func:`normalize_url` and :func:`endpoints` are the parsers for what users type."""

from __future__ import annotations

import contextlib
import queue
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from tritonops.dtypes import from_config, from_numpy
from tritonops.errors import ServerError, UsageError
from tritonops.pbtxt import config_to_json

InferProtocol = Literal["http-json", "http-binary", "grpc"]
PROTOCOLS: tuple[InferProtocol, ...] = ("http-json", "http-binary", "grpc")
ApiProtocol = Literal["http", "grpc"]  # calls that do not carry tensors
API_PROTOCOLS: tuple[ApiProtocol, ...] = ("http", "grpc")
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT = 8000, 8001


# ------------------------------------------------------------------------------------------ endpoints
def _split_host_port(url: str) -> tuple[str, str]:
    """``host:port`` -> (host, port text); ``[v6]:port`` keeps its brackets; no port -> (url, "")."""
    if url.endswith("]") or ":" not in url:
        return url, ""
    host, _, port = url.rpartition(":")
    return host, port


def normalize_url(url: str, what: str = "--url") -> str:
    """``http://host:port/``, ``grpc://host:port`` or ``host:port`` -> ``host:port`` (the port is required)."""
    u = url.strip()
    for prefix in ("http://", "grpc://"):
        if u.startswith(prefix):
            u = u[len(prefix):]
    u = u.rstrip("/")
    if "://" in u or "/" in u or not u:
        raise UsageError(f"{what} '{url}' is not HOST:PORT", f"write it like {what} 127.0.0.1:8000")
    host, port = _split_host_port(u)
    if not host or not port.isdigit():
        raise UsageError(f"{what} '{url}' has no port", f"write it like {what} 127.0.0.1:8000")
    return u


def endpoints(url: str, http_port: int | None = None, grpc_port: int = DEFAULT_GRPC_PORT) -> tuple[str, str]:
    """``--url host[:port]`` with ``--http-port``/``--grpc-port`` -> (HTTP ``host:port``, gRPC ``host:port``)."""
    if "://" in url:
        raise UsageError(f"--url '{url}' includes a scheme", "give the host, e.g. --url localhost")
    host, port_in_url = _split_host_port(url)
    if port_in_url and http_port is not None:
        raise UsageError(f"--url '{url}' has a port and --http-port is given too", "give the port once")
    if (":" in url and not port_in_url) or (port_in_url and not port_in_url.isdigit()):
        raise UsageError(f"cannot parse --url '{url}'", "give host or host:port, e.g. --url localhost:8000")
    return f"{host}:{int(port_in_url) if port_in_url else (http_port or DEFAULT_HTTP_PORT)}", f"{host}:{grpc_port}"


def host_of(url: str) -> str:
    """The host part of what a user gave (scheme and port dropped): ``http://[::1]:8000/`` -> ``[::1]``."""
    u = url.strip().split("//")[-1].rstrip("/")
    return _split_host_port(u)[0]


def grpc_beside(http_url: str) -> str:
    """Triton's default layout: gRPC on the HTTP port + 1 (8000/8001)."""
    host, port = _split_host_port(http_url)
    return f"{host}:{int(port) + 1}"


# ------------------------------------------------------------------------------------------ errors
def status_of(e: BaseException) -> str:
    """The HTTP status ("400") or gRPC code ("StatusCode.UNAVAILABLE") of a tritonclient error, or ""."""
    status = getattr(e, "status", None)
    return str(status() if callable(status) else status or "") or ""


def message_of(e: BaseException) -> str:
    """The first line of what the server (or the socket) said; the exception's type name if nothing."""
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    return (text or type(e).__name__).strip().splitlines()[0] if (text or "").strip() else type(e).__name__


def short(text: str, limit: int = 160) -> str:
    """Whitespace collapsed, at most ``limit`` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str) -> str:
    """The first line of a server's message (a load failure's reason runs over many)."""
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


@dataclass(frozen=True)
class CallError:
    """What a failed call to Triton says: ``status`` (HTTP status / gRPC code, "" if none), the first
    line of the message, and whether the server could not be reached at all."""

    status: str
    message: str
    unreachable: bool
    timed_out: bool


def classify(e: BaseException) -> CallError:
    status = status_of(e)
    message = message_of(e)
    text = f"{type(e).__name__}: {message} {status}"
    timed_out = "timed out" in text.lower() or "DEADLINE_EXCEEDED" in text
    down = (isinstance(e, OSError) or "UNAVAILABLE" in status or "Connection refused" in text
            or "Name or service not known" in text or "gaierror" in text or "DNS resolution failed" in text)
    return CallError(status, message, down or timed_out, timed_out)


def unreachable(protocol: Literal["HTTP", "gRPC"], url: str, e: BaseException) -> ServerError:
    """A clear error for a failed first contact: nothing listening, a non-Triton port, or no such host."""
    default = {"HTTP": DEFAULT_HTTP_PORT, "gRPC": DEFAULT_GRPC_PORT}[protocol]
    flag = "--http-port" if protocol == "HTTP" else "--grpc-port"
    text = f"{type(e).__name__}: {message_of(e)}"
    if isinstance(e, ConnectionRefusedError) or "Connection refused" in text:
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


GRPC_LIMIT_HINT = ("send a smaller batch (--batch-size), use HTTP for large tensors, or raise the client's limit "
                   "(--grpc-max-message-size / the client's grpc.max_receive_message_length)")


def infer_error(e: BaseException) -> tuple[str, str]:
    """(detail, hint) for a failed inference."""
    status = status_of(e)
    msg = short(message_of(e), 300)
    if "RESOURCE_EXHAUSTED" in status:
        return f"gRPC message size limit exceeded (RESOURCE_EXHAUSTED: {msg})", GRPC_LIMIT_HINT
    if "UNAVAILABLE" in status or isinstance(e, ConnectionError):
        return f"the server went away ({msg})", "check the server log; the server or the model may have crashed"
    return f"inference failed: {msg}", "the server's error is above; check the inputs and the server log"


class MissingOutput(Exception):
    """The response lacks an output that was requested."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the response has no output '{name}'")
        self.name = name


# ------------------------------------------------------------------------------------------ tensors
def to_bytes_array(a: np.ndarray) -> np.ndarray:
    """Strings as Triton's BYTES arrays: ``np.object_`` of ``bytes`` (HTTP JSON hands back ``str``)."""
    if a.size == 0:
        return a.astype(np.object_)
    return np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else bytes(s), otypes=[object])(a)


def input_types(config: mc.ModelConfig) -> dict[str, str]:
    """Input name -> Triton type name ("FP32", "BYTES"), what a request declares for each tensor."""
    return {t.name: from_config(mc.DataType.Name(t.data_type)).name for t in config.input}


def _wire_type(name: str, a: np.ndarray, types: Mapping[str, str] | None) -> str:
    if types is not None and name in types:
        return types[name]
    return from_numpy(a.dtype).name


def _http_tensors(inputs: Mapping[str, np.ndarray], outputs: Sequence[str], binary: bool,
                  types: Mapping[str, str] | None) -> tuple[list[Any], list[Any]]:
    tensors = []
    for n, a in inputs.items():
        t = httpclient.InferInput(n, list(a.shape), _wire_type(n, a, types))
        t.set_data_from_numpy(a, binary_data=binary)
        tensors.append(t)
    return tensors, [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]


def _grpc_tensors(inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                  types: Mapping[str, str] | None) -> tuple[list[Any], list[Any]]:
    tensors = []
    for n, a in inputs.items():
        t = grpcclient.InferInput(n, list(a.shape), _wire_type(n, a, types))
        t.set_data_from_numpy(a)
        tensors.append(t)
    return tensors, [grpcclient.InferRequestedOutput(n) for n in outputs]


def http_request_body(inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, binary: bool,
                      types: Mapping[str, str] | None = None) -> tuple[bytes, int | None]:
    """The HTTP body of an inference request exactly as :meth:`TritonClient.infer` sends it, and the
    length of its JSON header when tensors follow in binary (None: all JSON)."""
    tensors, outs = _http_tensors(inputs, outputs, binary, types)
    body, header_len = httpclient.InferenceServerClient.generate_request_body(tensors, outs)
    return bytes(body), header_len


GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"  # the unary call tritonclient.grpc's infer makes
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1  # tritonclient.grpc's channel limit (INT32_MAX) both ways


def infer_path(model: str, version: str = "") -> str:
    """The HTTP path of an inference request, as tritonclient.http builds it."""
    name = urllib.parse.quote(model)
    return f"/v2/models/{name}/versions/{version}/infer" if version else f"/v2/models/{name}/infer"


def http_request_headers(header_len: int | None) -> dict[str, str]:
    """The headers tritonclient.http adds to an inference request: the JSON header's length when
    binary tensors follow it (:func:`http_request_body`), none for an all-JSON body."""
    return {} if header_len is None else {"Inference-Header-Content-Length": str(header_len)}


def grpc_request_message(model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *,
                         version: str = "", types: Mapping[str, str] | None = None) -> bytes:
    """The serialized gRPC ``ModelInferRequest`` tritonclient.grpc's ``infer`` sends for these
    tensors (raw input contents, no request id, no sequence), byte for byte: a load generator sends
    it as it is through ``GRPC_INFER_METHOD``."""
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, arr in inputs.items():
        t = req.inputs.add()
        t.name = name
        t.datatype = _wire_type(name, arr, types)
        t.shape.extend(arr.shape)
        raw = serialize_byte_tensor(arr).item() if arr.dtype == np.object_ and arr.size else arr.tobytes()
        req.raw_input_contents.append(bytes(raw))
    for o in outputs:
        req.outputs.add().name = o
    return bytes(req.SerializeToString())


def grpc_request_bytes(model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, version: str = "",
                       types: Mapping[str, str] | None = None) -> int:
    """The size of the gRPC ``ModelInferRequest`` message for these tensors (raw contents)."""
    return len(grpc_request_message(model, inputs, outputs, version=version, types=types))


# ------------------------------------------------------------------------------------------ the index
@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a model version and its state ("" when never loaded)."""

    name: str
    version: str
    state: str
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"

    @property
    def unloaded(self) -> bool:
        """Explicit model control: in the repository but not loaded (on purpose, until someone loads it)."""
        return not self.state or (self.state == "UNAVAILABLE" and self.reason.strip() == "unloaded")


def _vkey(v: str) -> int:
    return int(v) if v.isdigit() else -1


def by_model(entries: Sequence[IndexEntry]) -> dict[str, IndexEntry]:
    """One entry per model: with several versions, a READY one, the highest."""
    chosen: dict[str, IndexEntry] = {}
    for e in entries:
        old = chosen.get(e.name)
        if old is None or (e.ready, _vkey(e.version)) > (old.ready, _vkey(old.version)):
            chosen[e.name] = e
    return chosen


# ------------------------------------------------------------------------------------------ the client
class TritonClient:
    """An HTTP and a gRPC client to one server. ``timeout_s`` bounds each call (HTTP network timeout,
    gRPC deadline of inferences); ``headers`` go with every repository call (e.g. triton-admin-key);
    ``grpc_max_message_bytes`` limits inference messages like a production client's (metadata and
    statistics use an unlimited channel); ``http_concurrency`` is the HTTP connection pool size (a
    load generator sends many requests at once). Close it (or use it as a context manager)."""

    def __init__(self, http_url: str, grpc_url: str, *, timeout_s: float = 30.0,
                 connect_timeout_s: float | None = None, headers: Mapping[str, str] | None = None,
                 grpc_max_message_bytes: int | None = None, http_concurrency: int = 1) -> None:
        self.http_url = http_url
        self.grpc_url = grpc_url
        self.timeout_s = timeout_s
        self.headers = dict(headers) if headers else None
        connect = connect_timeout_s if connect_timeout_s is not None else min(10.0, timeout_s)
        try:
            self.http = httpclient.InferenceServerClient(http_url, concurrency=http_concurrency,
                                                         connection_timeout=connect, network_timeout=timeout_s)
        except Exception as e:  # tritonclient raises plain Exceptions for URLs it cannot parse
            raise UsageError(f"cannot use server URL '{http_url}': {message_of(e)}", "give --url HOST:PORT") from None
        self._grpc: Any = None
        self._grpc_infer: Any = None
        self._grpc_limit = grpc_max_message_bytes

    # gRPC channels are made on first use: an HTTP-only caller never opens one (and the locustfile's
    # HTTP users never touch grpc under gevent).
    @property
    def grpc(self) -> Any:
        if self._grpc is None:
            self._grpc = grpcclient.InferenceServerClient(self.grpc_url)
        return self._grpc

    @property
    def grpc_infer(self) -> Any:
        if self._grpc_infer is None:
            if self._grpc_limit is None:
                self._grpc_infer = self.grpc
            else:
                limit = self._grpc_limit
                self._grpc_infer = grpcclient.InferenceServerClient(self.grpc_url, channel_args=[
                    ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])
        return self._grpc_infer

    def close(self) -> None:
        for c in {id(x): x for x in (self.http, self._grpc, self._grpc_infer) if x is not None}.values():
            with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
                c.close()
        self._grpc = self._grpc_infer = None

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _api(self, protocol: ApiProtocol) -> Any:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol {protocol!r} is not 'http' or 'grpc'")
        return self.http if protocol == "http" else self.grpc

    # ---- server
    def server_metadata(self, protocol: ApiProtocol = "http") -> dict[str, Any]:
        """``{"name", "version", "extensions"}``; raises what tritonclient raises (see :func:`unreachable`)."""
        if protocol == "http":
            meta = self.http.get_server_metadata()
            if not isinstance(meta, dict) or "version" not in meta:
                raise ValueError(f"unexpected server metadata {str(meta)[:80]!r}")
            return dict(meta)
        resp = self.grpc.get_server_metadata(client_timeout=min(10.0, self.timeout_s))
        return {"name": resp.name, "version": resp.version, "extensions": list(resp.extensions)}

    def check_reachable(self) -> str:
        """Contact both endpoints; the server's version, or a ServerError saying which endpoint failed and why."""
        try:
            version = str(self.server_metadata("http").get("version", ""))
        except Exception as e:
            raise unreachable("HTTP", self.http_url, e) from None
        try:
            self.server_metadata("grpc")
        except Exception as e:
            raise unreachable("gRPC", self.grpc_url, e) from None
        return version

    def is_server_live(self, protocol: ApiProtocol = "http") -> bool:
        return bool(self._api(protocol).is_server_live())

    def is_server_ready(self, protocol: ApiProtocol = "http") -> bool:
        return bool(self._api(protocol).is_server_ready())

    def is_model_ready(self, name: str, version: str = "", protocol: ApiProtocol = "http") -> bool:
        return bool(self._api(protocol).is_model_ready(name, version))

    # ---- repository
    def repository_index(self, protocol: ApiProtocol = "http") -> list[IndexEntry]:
        """Every model version the server's repository holds, with its state."""
        if protocol == "http":
            rows = self.http.get_model_repository_index(headers=self.headers)
        else:
            rows = self.grpc.get_model_repository_index(headers=self.headers, as_json=True).get("models", [])
        return [IndexEntry(str(r.get("name", "")), str(r.get("version", "")), str(r.get("state", "")),
                           str(r.get("reason", ""))) for r in rows]

    def models(self, protocol: ApiProtocol = "http") -> dict[str, IndexEntry]:
        """The index with one entry per model (a READY version, the highest)."""
        return by_model(self.repository_index(protocol))

    def live_versions(self) -> dict[str, list[int]]:
        """Model -> its READY numeric versions, sorted."""
        live: dict[str, list[int]] = {}
        for e in self.repository_index():
            if e.ready and e.version.isdigit():
                live.setdefault(e.name, []).append(int(e.version))
        return {k: sorted(v) for k, v in live.items()}

    def ready_versions(self, name: str) -> list[int]:
        return self.live_versions().get(name, [])

    def load_model(self, name: str, config: mc.ModelConfig | str | None = None,
                   protocol: ApiProtocol = "http") -> None:
        """Load (or reload) a model; ``config`` (a ModelConfig or its JSON) overrides its config.pbtxt."""
        text = config_to_json(config) if isinstance(config, mc.ModelConfig) else config
        if protocol == "http":
            self.http.load_model(name, headers=self.headers, config=text)
        else:
            self.grpc.load_model(name, headers=self.headers, config=text, client_timeout=self.timeout_s)

    def unload_model(self, name: str, protocol: ApiProtocol = "http") -> None:
        self._api(protocol).unload_model(name, headers=self.headers)

    # ---- models
    def model_config(self, name: str, version: str = "", protocol: ApiProtocol = "http") -> mc.ModelConfig:
        """The config the server runs (after auto-complete), as a ModelConfig."""
        if protocol == "http":
            d = self.http.get_model_config(name, version)
            return json_format.ParseDict(d, mc.ModelConfig(), ignore_unknown_fields=True)
        cfg = mc.ModelConfig()
        cfg.CopyFrom(self.grpc.get_model_config(name, version).config)
        return cfg

    def model_metadata(self, name: str, version: str = "", protocol: ApiProtocol = "http") -> dict[str, Any]:
        """``{"name", "versions", "platform", "inputs", "outputs"}`` with integer shapes, on both protocols."""
        if protocol == "http":
            return dict(self.http.get_model_metadata(name, version))
        d = json_format.MessageToDict(self.grpc.get_model_metadata(name, version), preserving_proto_field_name=True)
        for key in ("inputs", "outputs"):
            for t in d.get(key, []):
                t["shape"] = [int(s) for s in t.get("shape", [])]
        return d

    def statistics(self, name: str = "", version: str = "", protocol: ApiProtocol = "http") -> dict[str, Any]:
        """The statistics extension's JSON: ``{"model_stats": [{name, version, inference_stats, ...}]}``."""
        if protocol == "http":
            return dict(self.http.get_inference_statistics(name, version))
        return dict(self.grpc.get_inference_statistics(name, version, as_json=True))

    def inference_totals(self, name: str) -> dict[str, tuple[int, int]]:
        """A model's cumulative ``inference_stats`` over its versions: key ("success", "cache_hit",
        "cache_miss", "queue", "compute_infer", ...) -> (count, ns)."""
        totals: dict[str, tuple[int, int]] = {}
        for s in self.statistics(name).get("model_stats", []):
            for key, value in s.get("inference_stats", {}).items():
                count, ns = totals.get(key, (0, 0))
                totals[key] = (count + int(value.get("count", 0)), ns + int(value.get("ns", 0)))
        return totals

    def inference_counts(self, name: str) -> tuple[int, int, int]:
        """(successful inferences, cache hits, cache misses) of a model, over its versions."""
        totals = self.inference_totals(name)
        success, hits, misses = (totals.get(k, (0, 0))[0] for k in ("success", "cache_hit", "cache_miss"))
        return success, hits, misses

    # ---- inference
    def infer_raw(self, protocol: InferProtocol, model: str, inputs: Mapping[str, np.ndarray],
                  outputs: Sequence[str], *, version: str = "", types: Mapping[str, str] | None = None,
                  sequence_id: int | str | None = None, sequence_start: bool = True,
                  sequence_end: bool = True) -> Any:
        """One inference; tritonclient's InferResult, undecoded (what a load generator wants).

        ``types`` maps input names to Triton types (:func:`input_types`); inputs not in it are typed
        from their numpy dtype. ``sequence_id`` (an integer, or a string for a STRING CORRID) sends
        the request as a step of that sequence: by default a whole one-request sequence, else the
        first step (``sequence_end=False``), a middle step (both False) or the last one."""
        kwargs: dict[str, Any] = {}
        if sequence_id is not None:
            kwargs = {"sequence_id": sequence_id, "sequence_start": sequence_start, "sequence_end": sequence_end}
        if protocol == "grpc":
            tensors, outs = _grpc_tensors(inputs, outputs, types)
            return self.grpc_infer.infer(model, tensors, model_version=version, outputs=outs,
                                         client_timeout=self.timeout_s, **kwargs)
        if protocol not in ("http-json", "http-binary"):
            raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        tensors, outs = _http_tensors(inputs, outputs, protocol == "http-binary", types)
        return self.http.infer(model, tensors, model_version=version, outputs=outs, **kwargs)

    def infer(self, protocol: InferProtocol, model: str, inputs: Mapping[str, np.ndarray],
              outputs: Sequence[str], *, version: str = "", types: Mapping[str, str] | None = None,
              sequence_id: int | str | None = None, sequence_start: bool = True,
              sequence_end: bool = True) -> dict[str, np.ndarray]:
        """One inference; every requested output as a numpy array (strings as ``np.object_`` of bytes,
        whatever the protocol). Raises :class:`MissingOutput` when the response lacks one.
        ``sequence_*`` as for :meth:`infer_raw`."""
        res = self.infer_raw(protocol, model, inputs, outputs, version=version, types=types,
                             sequence_id=sequence_id, sequence_start=sequence_start, sequence_end=sequence_end)
        return _decoded(res, outputs)

    def stream(self) -> GrpcStream:
        """A gRPC bidirectional stream (``start_stream`` / ``async_stream_infer``) on a channel of its
        own, with this client's message limit and timeout; close it (or use it as a context manager)."""
        return GrpcStream(self.grpc_url, timeout_s=self.timeout_s, max_message_bytes=self._grpc_limit)


def _decoded(res: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    result = {}
    for n in outputs:
        arr = res.as_numpy(n)
        if arr is None:
            raise MissingOutput(n)
        if arr.dtype == np.object_ or arr.dtype.kind == "U":
            arr = to_bytes_array(arr)  # HTTP JSON gives str, the binary paths give bytes
        result[n] = arr
    return result


# ------------------------------------------------------------------------------------------ streaming
FINAL_RESPONSE_PARAMETER = "triton_final_response"  # set on a decoupled model's last response


class StreamTimeout(TimeoutError):
    """No response arrived on a stream within the client's timeout."""


@dataclass(frozen=True)
class StreamResponse:
    """One response that arrived on a stream: the request it answers, its outputs (strings as
    ``np.object_`` of bytes), whether it is the request's final response, or the server's error
    (a stream error carries no request id: ``request_id`` is then "")."""

    request_id: str
    outputs: dict[str, np.ndarray]
    final: bool
    error: str | None = None


class GrpcStream:
    """One gRPC stream: requests go out with :meth:`send`, responses come back in arrival order
    from :meth:`receive`. Over a stream a decoupled model sends zero or more responses per request
    and, when asked (``decoupled=True``), an empty final one; a stateful model's requests of many
    sequences may share it."""

    def __init__(self, grpc_url: str, *, timeout_s: float = 30.0, max_message_bytes: int | None = None) -> None:
        args = None if max_message_bytes is None else [
            ("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
        self.timeout_s = timeout_s
        self._responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._client = grpcclient.InferenceServerClient(grpc_url, channel_args=args)
        try:
            self._client.start_stream(callback=lambda result, error: self._responses.put((result, error)))
        except Exception:
            self._client.close()
            raise

    def send(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, request_id: str,
             version: str = "", types: Mapping[str, str] | None = None, sequence_id: int | str | None = None,
             sequence_start: bool = False, sequence_end: bool = False, decoupled: bool = False) -> None:
        """Send one request; ``decoupled`` asks for the empty final response that ends a request's
        responses (Triton's ``enable_empty_final_response``)."""
        tensors, outs = _grpc_tensors(inputs, outputs, types)
        kwargs: dict[str, Any] = {}
        if sequence_id is not None:
            kwargs = {"sequence_id": sequence_id, "sequence_start": sequence_start, "sequence_end": sequence_end}
        self._client.async_stream_infer(model, tensors, model_version=version, outputs=outs, request_id=request_id,
                                        enable_empty_final_response=decoupled, **kwargs)

    def receive(self) -> StreamResponse:
        """The next response; raises :class:`StreamTimeout` when none comes within the timeout."""
        try:
            result, error = self._responses.get(timeout=self.timeout_s)
        except queue.Empty:
            raise StreamTimeout(f"no response on the gRPC stream within {self.timeout_s:g} s") from None
        if error is not None:
            return StreamResponse("", {}, True, message_of(error))
        resp = result.get_response()
        final = resp.parameters[FINAL_RESPONSE_PARAMETER].bool_param \
            if FINAL_RESPONSE_PARAMETER in resp.parameters else True
        return StreamResponse(str(resp.id), _decoded(result, [o.name for o in resp.outputs]), final)

    def responses(self, request_id: str) -> list[StreamResponse]:
        """Every response to one decoupled request (sent with ``decoupled=True``), up to and
        including its final one; an error ends them too. Responses to other requests are dropped."""
        got = []
        while True:
            r = self.receive()
            if r.request_id not in (request_id, ""):
                continue
            got.append(r)
            if r.final or r.error is not None:
                return got

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken stream must not hide the real error
            self._client.stop_stream()
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> GrpcStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def response_version(result: Any) -> str:
    """The model version that answered an InferResult, on either protocol."""
    resp = result.get_response()
    return str(resp["model_version"] if isinstance(resp, dict) else resp.model_version)
