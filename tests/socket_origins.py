"""Where an unclosed socket was opened.

A socket that the garbage collector finds still open raises a ``ResourceWarning``, which this suite treats as
an error, in whichever test happens to collect it, often long after it was opened and without saying where.
:func:`trace_socket_origins` records a short stack for every socket the test process opens and, when one is
finalised unclosed, writes that stack to stderr (captured with the failing test) before Python's own warning.
"""

from __future__ import annotations

import _socket
import socket
import sys
import traceback
from typing import Any

_origins: dict[int, str] = {}


def trace_socket_origins(depth: int = 12) -> None:
    """Record where each socket of this process is opened; report it if the socket is never closed."""
    if getattr(socket.socket, "_dlstream_traced", False):
        return
    opened = socket.socket.__init__
    really_close = socket.socket._real_close  # type: ignore[attr-defined]

    def __init__(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        _origins[id(self)] = "".join(traceback.format_stack(limit=depth)[:-1])

    def _real_close(self: socket.socket, *args: Any) -> None:
        _origins.pop(id(self), None)
        really_close(self, *args)

    def __del__(self: socket.socket) -> None:
        where = _origins.pop(id(self), None)
        if where is not None and self.fileno() != -1:
            sys.stderr.write(f"unclosed socket {self!r} was opened at:\n{where}")
        _socket.socket.__del__(self)  # type: ignore[attr-defined]

    socket.socket.__init__ = __init__  # type: ignore[method-assign]
    socket.socket._real_close = _real_close  # type: ignore[attr-defined]
    socket.socket.__del__ = __del__  # type: ignore[attr-defined]
    socket.socket._dlstream_traced = True  # type: ignore[attr-defined]
