"""The garbage collector kept off a service's hot path."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now (imported libraries, the app, its clients) out of the collector's reach.

    A service's objects per event are freed by reference counting; the cyclic collector only finds the rare
    cycle. But its full collections walk the whole heap, and a worker's heap after start-up (Faust, aiokafka,
    gRPC, numpy, pydantic) made each one stop the event loop for 50-100 ms, every few seconds under load:
    the tail of the latency. Frozen objects are never walked again; what is created later still is.
    """
    gc.collect()
    gc.freeze()
