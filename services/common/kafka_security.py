"""TLS and SASL for the asyncio clients (aiokafka, Faust), which take an SSL context instead of file names."""

from __future__ import annotations

import ssl
from typing import Any

from services.common.kafka_admin import client_options
from services.common.settings import KafkaSettings


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


def faust_credentials(settings: KafkaSettings) -> Any:
    """The ``broker_credentials`` of a Faust app: None for PLAINTEXT."""
    import faust

    context = ssl_context(settings)
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
