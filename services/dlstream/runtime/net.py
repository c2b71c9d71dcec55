"""Small network helpers: probes for health checks and free ports for extra deployments."""

from __future__ import annotations

import random
import socket
import ssl
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(host: str, port: int, path: str, timeout_s: float) -> bool:
    """True when ``GET http://host:port/path`` answers 200 in time."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def _listening_range() -> range:
    """Ports below the kernel's ephemeral range: no outgoing connection takes one of them between the
    moment it is found free and the moment a server binds it (a port from ``bind(0)`` lies inside that range,
    where any client's connection may take it first)."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(LOWEST_PORT, low) if low - LOWEST_PORT >= 1_000 else range(0)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago, below the ephemeral range where
    the kernel has one, and none handed out before by this process."""
    candidates = _listening_range()
    ports: list[int] = []
    with ExitStack() as stack:
        for port in random.sample(candidates, len(candidates)):
            if len(ports) == count:
                break
            if port in _handed_out:
                continue
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
        while len(ports) < count:  # no range below the ephemeral one: the kernel's choice
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
    _handed_out.update(ports)
    return ports


def tls_mismatch(
    host: str, port: int, *, wants_tls: bool, context: ssl.SSLContext | None = None
) -> str | None:
    """Why a client that does (``wants_tls``) or does not speak TLS cannot talk to host:port, in words; None
    when the server agrees with the client, or when nothing answers (then the error is no mismatch).

    A TLS-only server resets a plaintext client, and a plaintext server drops a TLS handshake: clients
    report both as a lost connection or a timeout. One handshake tells them apart; with ``context`` it
    also checks that the server's certificate is trusted.
    """
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=3.0) as raw, probe.wrap_socket(raw):
            speaks_tls = True
    except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        speaks_tls = False
    except OSError:
        return None
    if speaks_tls and not wants_tls:
        return f"{host}:{port} speaks TLS only, and this client connects without TLS"
    if wants_tls and not speaks_tls:
        return f"{host}:{port} does not speak TLS, and this client connects with TLS"
    if wants_tls and context is not None:
        try:
            with (
                socket.create_connection((host, port), timeout=3.0) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                pass
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the certificate of {host}:{port} is not trusted ({exc.verify_message}): check the CA file"
            )
        except OSError:
            return None
    return None
