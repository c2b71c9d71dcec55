"""Structured logging for every entry point (JSON lines by default)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

from dlstream.config.settings import LogSettings


def configure_logging(settings: LogSettings) -> None:
    """Route structlog and the standard library's logging to stderr at the configured level."""
    level = getattr(logging, settings.level)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.json_logs else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python and aiokafka narrate every connection at INFO; their warnings still come through.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class RepeatLimiter(logging.Filter):
    """Lets through one record per logger, level and message every ``interval_s`` from the Kafka client
    libraries; the next one let through says how many were held back.

    While a broker is away, aiokafka and kafka-python log each retry of each client, dozens of lines a
    second for as long as the outage lasts; one line per kind every few seconds says as much.
    """

    def __init__(
        self,
        interval_s: float = 10.0,
        *,
        loggers: tuple[str, ...] = ("kafka", "aiokafka"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.loggers = loggers
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat within the interval; otherwise True, noting the repeats held back."""
        if not any(record.name == n or record.name.startswith(n + ".") for n in self.loggers):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) > 1000:  # messages with their values in them would otherwise pile up
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} ({seen[1]} more like it held back over {self.interval_s:.0f} s)"
        return True
