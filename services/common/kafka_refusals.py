"""Why Kafka refused a kafka-python client, in words.

kafka-python retries a refused password, a missing right or a TLS mismatch until its bootstrap times out,
and then reports only the timeout; the refusal itself is only logged. The block under
:func:`explained_kafka_errors` collects those log records, and its error says what was refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from kafka.errors import (
    AuthorizationError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from services.common.errors import AccessDenied, DlstreamError, TransientError
from services.common.net import tls_mismatch
from services.common.settings import KafkaSettings

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

    def detach(self) -> None:
        """Stop listening."""
        logging.getLogger("kafka").removeHandler(self)

    def explain(self, exc: KafkaError, doing: str) -> DlstreamError:
        """The project's error for ``exc`` (see :func:`kafka_failure`)."""
        return kafka_failure(self.settings, exc, self.refusals, doing)


@contextmanager
def explained_kafka_errors(settings: KafkaSettings, doing: str) -> Iterator[None]:
    """Run a block of kafka-python calls; a :class:`KafkaError` out of it becomes :class:`AccessDenied`
    when the broker refused this client (credentials, rights, TLS or not), else :class:`TransientError`
    ``"<doing>: <error>"``."""
    refusals = KafkaRefusals(settings).attach()
    try:
        yield
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
    # Imported here: kafka_security builds on kafka_admin, which builds on this module.
    from services.common.kafka_security import ssl_context

    host, port = settings.first_host_port
    context = ssl_context(settings)
    mismatch = tls_mismatch(host, port, wants_tls=settings.security_protocol.endswith("SSL"), context=context)
    if mismatch is not None:
        return AccessDenied(
            f"Kafka at {servers} refused the connection: {mismatch} "
            f"(DLSTREAM_KAFKA__SECURITY_PROTOCOL is {settings.security_protocol})"
        )
    return TransientError(f"{doing}: {exc}")
