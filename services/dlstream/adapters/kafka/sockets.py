"""A socket leak of kafka-python's connection set-up, closed, and a response it drops, delivered.

kafka-python 3.0 (``kafka.net.inet.KafkaNetSocket.sock_connect``) opens a non-blocking socket and waits for it
to connect; when that wait times out, fails, or is abandoned because the client closes meanwhile, the socket
is left open until the garbage collector finds it. On a busy machine this happens with short-lived clients
(the SDK's subscribe, topic administration) and leaks one descriptor per occurrence.
:func:`close_failed_connects` wraps the method so that the socket is closed whenever the connect does not
hand it over, and a TLS transport whose handshake fails is closed too.

Its transports also drop the bytes of a read that ends with the peer closing the connection. A broker that
refuses a password sends its SASL error and then closes; when the client reads both at once (a busy machine),
the error is lost and the refusal looks like a broken connection until the bootstrap times out. The bytes are
now handed over first, and the close is seen on the next read.

A transport closed while a write waits for the socket (a client closing just after queueing a heartbeat or a
leave-group request) defers the socket's close to the end of that flush; when the client then shuts its IO
loop down, the flush is cancelled and the socket is never closed. It is now closed when that flush ends
without finishing.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Callable
from typing import Any

_MARK = "_dlstream_closes_failed_connects"


def close_failed_connects() -> None:
    """Make kafka-python close a socket whose connect fails or is abandoned (idempotent)."""
    from kafka.net.inet import KafkaNetSocket
    from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

    _wrap_once(KafkaNetSocket, "sock_connect", _closing_failed_connects)
    # The connection manager builds the TLS transport, then awaits its handshake; when the handshake fails
    # (an untrusted certificate, a server that is no TLS server, a broker gone mid-handshake) it raises
    # without closing the transport, and its socket waits for the garbage collector.
    _wrap_once(KafkaSSLTransport, "handshake", _closing_failed_handshakes)
    for transport in (KafkaTCPTransport, KafkaSSLTransport):
        _wrap_once(transport, "_sock_recv", _received_first)
    _wrap_once(KafkaTCPTransport, "_write_to_sock", _closing_when_a_closing_flush_is_cancelled)


def _wrap_once(owner: type, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``owner``'s own ``name`` by ``wrap(original)``, unless it has none or is wrapped already."""
    original = owner.__dict__.get(name)
    if original is None or getattr(original, _MARK, False):
        return
    wrapper = wrap(original)
    setattr(wrapper, _MARK, True)
    setattr(owner, name, wrapper)


def _closing_failed_connects(original: Any) -> Any:
    async def sock_connect(
        self: Any, net: Any, sock: socket.socket, sockaddr: Any, timeout_at: float | None = None
    ) -> socket.socket:
        try:
            connected: socket.socket = await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:  # a failure, a timeout, or the coroutine closed with its client
            sock.close()
            raise
        return connected

    return sock_connect


def _closing_failed_handshakes(original: Any) -> Any:
    async def handshake(self: Any) -> None:
        try:
            await original(self)
        except BaseException:
            self.close()
            raise

    return handshake


def _received_first(original: Any) -> Any:
    def _sock_recv(self: Any) -> tuple[bytes, Any]:
        data, error = original(self)
        # The socket stays at end of file, so the next read reports the close.
        return (data, None) if data and error is not None else (data, error)

    return _sock_recv


def _closing_when_a_closing_flush_is_cancelled(original: Any) -> Any:
    async def _write_to_sock(self: Any) -> None:
        try:
            await original(self)
        except BaseException:  # the IO loop cancelled the flush, or the socket failed
            if self._closed:
                _close_socket(self)
            raise

    return _write_to_sock


def _close_socket(transport: Any) -> None:
    sock, transport._sock = transport._sock, None
    if sock is None:
        return
    with contextlib.suppress(KeyError, ValueError, RuntimeError):
        transport._net.unregister_event(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sock.close()
