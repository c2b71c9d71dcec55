"""Why Kafka refused a kafka-python client, in words.

kafka-python retries a refused password, a missing right or a TLS mismatch until its bootstrap times out,
and then reports only the timeout; the refusal itself is only logged. The block under
:func:`explained_kafka_errors` collects those log records, and its error says what was refused.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from kafka.errors import (
    AuthorizationError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from dlstream.adapters.kafka.connection import ssl_context
from dlstream.config.settings import KafkaSettings
from dlstream.domain.errors import AccessDenied, DlstreamError, TransientError
from dlstream.runtime.net import tls_mismatch

_SASL_HANDSHAKE = 17  # Kafka's SaslHandshake API key; version 1
_PROBE_MECHANISM = "dlstream-probe"  # no broker enables it: the answer lists the ones it does

_REFUSALS = (
    SaslAuthenticationFailedError,
    AuthorizationError,
    IllegalSaslStateError,
    UnsupportedSaslMechanismError,
)


class KafkaRefusals(logging.Handler):
    """While attached (:meth:`attach` to :meth:`detach`), keeps the refusals kafka-python logs (the
    exception is an argument of the record), so :meth:`explain` can name them."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(logging.WARNING)
        self.settings = settings
        self.refusals: list[KafkaError] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the refusal a record carries, if any."""
        args = record.args if isinstance(record.args, tuple) else ()
        self.refusals += [arg for arg in args if isinstance(arg, _REFUSALS)]

    def attach(self) -> KafkaRefusals:
        """Start listening to kafka-python's log."""
        logging.getLogger("kafka").addHandler(self)
        return self

    def refused(self) -> bool:
        """Whether the broker refused this client for good: a refusal was logged, or its listener refuses the
        client's protocol (:func:`listener_refusal`)."""
        return bool(self.refusals) or listener_refusal(self.settings) is not None

    def detach(self) -> None:
        """Stop listening."""
        logging.getLogger("kafka").removeHandler(self)

    def explain(self, exc: KafkaError, doing: str) -> DlstreamError:
        """The project's error for ``exc`` (see :func:`kafka_failure`)."""
        return kafka_failure(self.settings, exc, self.refusals, doing)


@contextmanager
def explained_kafka_errors(settings: KafkaSettings, doing: str) -> Iterator[KafkaRefusals]:
    """Run a block of kafka-python calls; a :class:`KafkaError` out of it becomes :class:`AccessDenied`
    when the broker refused this client (credentials, rights, TLS or not), else :class:`TransientError`
    ``"<doing>: <error>"``."""
    refusals = KafkaRefusals(settings).attach()
    try:
        yield refusals
    except KafkaError as exc:
        raise refusals.explain(exc, doing) from exc
    finally:
        refusals.detach()


def kafka_failure(
    settings: KafkaSettings, exc: KafkaError, refusals: Sequence[KafkaError], doing: str
) -> DlstreamError:
    """The project's error for ``exc``, given the refusals logged meanwhile."""
    servers = settings.bootstrap_servers
    refusal = exc if isinstance(exc, _REFUSALS) else (refusals[-1] if refusals else None)
    if isinstance(refusal, AuthorizationError):
        return AccessDenied(f"Kafka at {servers} denied user {settings.sasl_username!r} a right: {refusal}")
    if refusal is not None:
        return AccessDenied(
            f"Kafka at {servers} refused the credentials of user {settings.sasl_username!r} "
            f"({settings.sasl_mechanism}): {refusal}; check DLSTREAM_KAFKA__SASL_USERNAME and its password"
        )
    return listener_refusal(settings) or TransientError(f"{doing}: {exc}")


def listener_refusal(settings: KafkaSettings) -> AccessDenied | None:
    """What the broker's listener refuses of this client's protocol, probed: TLS spoken on one side only, or
    SASL required and the client connecting without; None when neither."""
    servers = settings.bootstrap_servers
    host, port = settings.first_host_port
    context = ssl_context(settings)
    mismatch = tls_mismatch(host, port, wants_tls=settings.security_protocol.endswith("SSL"), context=context)
    if mismatch is not None:
        return AccessDenied(
            f"Kafka at {servers} refused the connection: {mismatch} "
            f"(DLSTREAM_KAFKA__SECURITY_PROTOCOL is {settings.security_protocol})"
        )
    if not settings.security_protocol.startswith("SASL"):
        tls = settings.security_protocol == "SSL"
        mechanisms = sasl_mechanisms(host, port, tls=tls)
        if mechanisms:
            return AccessDenied(
                f"Kafka at {servers} refused the connection: its listener requires SASL authentication "
                f"({', '.join(mechanisms)}), and this client connects without SASL "
                f"(DLSTREAM_KAFKA__SECURITY_PROTOCOL is {settings.security_protocol}); use "
                f"SASL_{'SSL' if tls else 'PLAINTEXT'} with a user and password"
            )
    return None


def sasl_handshake_request(correlation_id: int) -> bytes:
    """A size-prefixed SaslHandshake v1 request (header v1) for a mechanism no broker enables."""
    client = b"dlstream"
    mechanism = _PROBE_MECHANISM.encode()
    body = struct.pack(">hhih", _SASL_HANDSHAKE, 1, correlation_id, len(client)) + client
    body += struct.pack(">h", len(mechanism)) + mechanism
    return struct.pack(">i", len(body)) + body


def sasl_handshake_mechanisms(response: bytes, correlation_id: int) -> list[str]:
    """The mechanisms a SaslHandshake response lists (the response without its size prefix); [] when it is
    not the answer to ``correlation_id`` or is cut short."""
    if len(response) < 10 or struct.unpack_from(">i", response)[0] != correlation_id:
        return []
    count = struct.unpack_from(">i", response, 6)[0]
    mechanisms, at = [], 10
    for _ in range(max(0, count)):
        if at + 2 > len(response):
            return []
        (size,) = struct.unpack_from(">h", response, at)
        at += 2
        mechanisms.append(response[at : at + size].decode("utf-8", errors="replace"))
        at += size
    return mechanisms


def sasl_mechanisms(host: str, port: int, *, tls: bool) -> list[str]:
    """The SASL mechanisms the listener at host:port requires of its clients; [] when it requires none or
    does not answer. One SaslHandshake tells: a SASL listener lists its mechanisms, another drops it."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # only asks which mechanisms; the client's own check stands
    try:
        with socket.create_connection((host, port), timeout=3.0) as raw:
            conn = probe.wrap_socket(raw) if tls else raw
            with conn:
                conn.sendall(sasl_handshake_request(1))
                size = struct.unpack(">i", _read(conn, 4))[0]
                return sasl_handshake_mechanisms(_read(conn, min(size, 65536)), 1)
    except (OSError, struct.error):
        return []


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data
