"""A kafka-python client's bootstrap that ends soon after the broker refused it.

kafka-python retries a refused password, a missing right or a TLS mismatch until its bootstrap times out
(30 s by default) and then reports only the timeout. :func:`bootstrapped` runs the bootstrap in slices (2 s,
then 4, 8...), each with a client of its own: when a slice times out and the broker has refused the client
(:meth:`~dlstream.adapters.kafka.refusals.KafkaRefusals.refused`: a refusal logged, or a listener that
speaks TLS, or SASL, and the client not), the wait ends there, and the caller's refusals say what was
refused; a broker that is only slow to answer still gets the whole timeout. The network client of a slice
that timed out is closed, not left to the garbage collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kafka.errors import KafkaTimeoutError

T = TypeVar("T")


class Refusals(Protocol):
    """What the bootstrap asks between slices (:class:`~dlstream.adapters.kafka.refusals.KafkaRefusals`)."""

    def refused(self) -> bool:
        """Whether the broker refused the client for good."""
        ...


BOOTSTRAP_TIMEOUT_S = 30.0
"""How long a client waits for a broker that does not answer (kafka-python's own default)."""
FIRST_SLICE_S = 2.0
"""The first bootstrap attempt's length; each next one is twice as long, so that a broker slow to answer (a
TLS handshake on a busy machine) is not cut off again and again."""


def bootstrapped(make: Callable[[dict[str, Any]], T], refusals: Refusals, timeout_s: float) -> T:
    """``make(options)``: a kafka-python client built with ``options`` (its ``bootstrap_timeout_ms`` and
    ``kafka_client``) added to its own, bootstrapped within ``timeout_s``.

    Raises:
        KafkaTimeoutError: the bootstrap timed out, or the broker refused the client (see ``refusals``).
    """
    from kafka.net.compat import KafkaNetClient

    made: list[Any] = []

    def network_client(**config: Any) -> Any:
        made.append(KafkaNetClient(**config))
        return made[-1]

    deadline = time.monotonic() + timeout_s
    slice_s = FIRST_SLICE_S
    while True:
        attempt_s = min(slice_s, max(0.1, deadline - time.monotonic()))
        slice_s *= 2
        try:
            return make({"bootstrap_timeout_ms": int(attempt_s * 1000), "kafka_client": network_client})
        except KafkaTimeoutError:
            while made:
                made.pop().close()
            if time.monotonic() >= deadline or refusals.refused():
                raise
