"""Addresses to listen on: port numbers, bind hosts (an address of this machine, or every interface
with a warning), free ports and the reason a port cannot be listened on. One validator for every
option that takes a port or a host."""

from __future__ import annotations

import errno
import ipaddress
import socket
import unicodedata

from tritonops.errors import ServerError, UsageError
from tritonops.paths import shown

WILDCARD_HOSTS = ("0.0.0.0", "::")  # noqa: S104 - named so that they can be warned about


def check_port(port: int, flag: str = "--port") -> int:
    """``port`` if it is a TCP port number (0: a free one), else a ``UsageError`` naming ``flag``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"{flag} {port} is not a port number", f"use {flag} N with 0 <= N <= 65535 (0: a free one)")
    return port


_HOST_HINT = "bind 127.0.0.1 (the default), an address of one of this machine's interfaces, or 0.0.0.0 for all"


def _host_addresses(host: str, flag: str) -> list[tuple[socket.AddressFamily, str]]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UsageError(f"{flag} {shown(host)} is neither an IP address nor a name that resolves",
                         _HOST_HINT) from None
    return [(family, str(addr[0])) for family, _, _, _, addr in infos]


def check_bind_host(host: str, flag: str = "--host") -> str | None:
    """Check an address to listen on; returns a warning to show the user, or None for loopback.

    It must be an address of this machine (binding it is the test) or a wildcard. Anything but
    loopback exposes a server that has no authentication, so those get a warning: a loud one for
    every interface (0.0.0.0, ::). Raises ``UsageError`` for an empty, malformed or foreign address."""
    if not host:
        raise UsageError("the host address is empty", "bind 127.0.0.1 (the default) or an interface address")
    if any(unicodedata.category(c)[0] in "CZ" for c in host) or host.startswith("-"):
        raise UsageError(f"{flag} {shown(host)} is not an address", _HOST_HINT)
    addresses = _host_addresses(host, flag)
    if any(ipaddress.ip_address(a.split("%")[0]).is_unspecified for _, a in addresses):
        return (f"{flag} {host} listens on EVERY network interface: anyone who can reach this machine can "
                "run inference on this server and, with explicit model control, load and unload models "
                "(Triton has no authentication). The URLs shown are the loopback ones; "
                "use --host 127.0.0.1 unless this is what you want.")
    for family, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, 0))
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    continue
            if ipaddress.ip_address(address.split("%")[0]).is_loopback:
                return None
            return (f"{flag} {host} is reachable from other machines on that network: anyone there can run "
                    "inference on this server (Triton has no authentication).")
    raise UsageError(f"{flag} {host} is not an address of this machine", _HOST_HINT)


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on now, or None."""
    with socket.socket(family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def check_port_free(host: str, port: int, flag: str) -> None:
    e = bind_error(host, port)
    if e is None:
        return
    if e.errno == errno.EADDRINUSE:
        raise ServerError(f"port {port} on {host} is in use",
                          f"stop the process using it, or choose another with {flag}")
    if e.errno == errno.EACCES:
        raise ServerError(f"port {port} on {host} needs privileges this process does not have",
                          f"ports below 1024 need root: choose another with {flag}")
    raise ServerError(f"cannot listen on {host} port {port}: {e.strerror}", f"choose another address or {flag}")
