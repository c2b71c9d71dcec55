"""Structured logging for every entry point (JSON lines by default)."""

from __future__ import annotations

import logging
import sys

import structlog

from services.common.settings import LogSettings


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python and aiokafka narrate every connection at INFO; their warnings still come through.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
