"""A Faust worker used by the integration tests: it reads a topic and writes one line per event it sees.

Each line is ``ce_id partition offset``; the test compares the lines with what it produced. Run as
``python -m tests.integration.faust_collector`` with COLLECT_* variables naming the broker, topic, group and
output file; it stops on SIGTERM.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faust


def build_app(broker: str, topic_name: str, group: str, out_path: Path, partitions: int) -> faust.App:
    """A Faust app with one agent appending what it reads to ``out_path``."""
    app = faust.App(
        group,
        broker=f"kafka://{broker}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(out_path.parent / "faust-data"),
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, partitions=partitions)

    @app.agent(topic)
    async def collect(stream: Any) -> None:
        with out_path.open("a") as out:
            async for batch in stream.take_events(500, within=0.5):
                for event in batch:
                    ce_id = event.headers.get("ce_id", b"?").decode()
                    out.write(f"{ce_id} {event.message.partition} {event.message.offset}\n")
                out.flush()

    return app


def main() -> None:
    """Entry point: build the app from COLLECT_* variables and run a worker until SIGTERM."""
    app = build_app(
        broker=os.environ["COLLECT_BROKER"],
        topic_name=os.environ["COLLECT_TOPIC"],
        group=os.environ["COLLECT_GROUP"],
        out_path=Path(os.environ["COLLECT_OUT"]),
        partitions=int(os.environ.get("COLLECT_PARTITIONS", "6")),
    )
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
