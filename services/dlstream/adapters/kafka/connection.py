"""How every Kafka client connects: bootstrap servers, TLS and SASL, for kafka-python and for the asyncio
clients (aiokafka, Faust), which take an SSL context instead of file names."""

from __future__ import annotations

import ssl
from typing import Any

from dlstream.adapters.kafka.sockets import close_failed_connects
from dlstream.config.settings import KafkaSettings


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python connection options (bootstrap servers, security) for any client.

    Every kafka-python client of the project is built from these options, so this is where kafka-python's
    failed connects are made to close their sockets (:mod:`dlstream.adapters.kafka.sockets`).
    """
    close_failed_connects()
    options: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",")],
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.ssl_cafile)
    return options


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying client context for SSL and SASL_SSL (the system CAs plus ``ssl_cafile``), else None."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile is not None else None
    return ssl.create_default_context(cafile=cafile)


def aiokafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options for an aiokafka client: kafka-python's, with the CA file turned into a context."""
    options = client_options(settings)
    options.pop("ssl_cafile", None)
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options
