"""Small network helpers: probes for health checks and free ports for extra deployments."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from contextlib import ExitStack


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


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


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
