"""A socket leak of kafka-python's connection set-up, closed.

kafka-python 3.0 (``kafka.net.inet.KafkaNetSocket.sock_connect``) opens a non-blocking socket and waits for it
to connect; when that wait times out, fails, or is abandoned because the client closes meanwhile, the socket
is left open until the garbage collector finds it. On a busy machine this happens with short-lived clients
(the SDK's subscribe, topic administration) and leaks one descriptor per occurrence.
:func:`close_failed_connects` wraps the method so that the socket is closed whenever the connect does not
hand it over, and a TLS transport whose handshake fails is closed too.
"""

from __future__ import annotations

import socket
from typing import Any

_MARK = "_dlstream_closes_failed_connects"


def close_failed_connects() -> None:
    """Make kafka-python close a socket whose connect fails or is abandoned (idempotent)."""
    from kafka.net.inet import KafkaNetSocket

    original = KafkaNetSocket.sock_connect
    if getattr(original, _MARK, False):
        return

    async def sock_connect(
        self: Any, net: Any, sock: socket.socket, sockaddr: Any, timeout_at: float | None = None
    ) -> socket.socket:
        try:
            connected: socket.socket = await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:  # a failure, a timeout, or the coroutine closed with its client
            sock.close()
            raise
        return connected

    setattr(sock_connect, _MARK, True)
    KafkaNetSocket.sock_connect = sock_connect
    _close_failed_tls_handshakes()


def _close_failed_tls_handshakes() -> None:
    # The connection manager builds the TLS transport, then awaits its handshake; when the handshake fails
    # (an untrusted certificate, a server that is no TLS server, a broker gone mid-handshake) it raises
    # without closing the transport, and its socket waits for the garbage collector.
    from kafka.net.transport import KafkaSSLTransport

    original = KafkaSSLTransport.handshake
    if getattr(original, _MARK, False):
        return

    async def handshake(self: Any) -> None:
        try:
            await original(self)
        except BaseException:
            self.close()
            raise

    setattr(handshake, _MARK, True)
    KafkaSSLTransport.handshake = handshake
