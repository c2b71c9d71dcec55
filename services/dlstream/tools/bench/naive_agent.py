"""The baseline of ``dlstream bench stream``: a plain Faust agent that handles one event at a time.

What a first version usually looks like: for each event, validate it, await Triton, shape the same
prediction and ``send`` it through Faust's producer. No micro-batching, no concurrency, no outcome handling
beyond that. Run as ``python -m dlstream.tools.bench.naive_agent`` with the usual ``DLSTREAM_*`` settings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust

from dlstream.adapters.faust.app import faust_credentials
from dlstream.adapters.triton.answers import task_prediction
from dlstream.adapters.triton.client import AsyncTriton
from dlstream.adapters.triton.discovery import TritonDiscovery
from dlstream.config.settings import Settings, load_settings
from dlstream.domain.contract import Modality, Timing, parse_request
from dlstream.runtime.logs import configure_logging


def build_naive_app(settings: Settings) -> faust.App:
    """A Faust app with one agent over the image request topic, one event per iteration."""
    inference = settings.inference
    inference.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        inference.group_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        broker_credentials=faust_credentials(settings.kafka),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(inference.data_dir / inference.group_id),
        store="memory://",
        consumer_auto_offset_reset="earliest",
    )
    requests = app.topic(settings.topics.image, key_type=bytes, value_type=bytes)
    predictions = app.topic(settings.topics.prediction("image"), key_type=bytes, value_type=bytes)

    @app.agent(requests)
    async def infer(stream: Any) -> None:
        triton = AsyncTriton(settings.triton)
        discovery = TritonDiscovery(settings.triton, overrides=inference.default_models)
        catalog = await discovery.refresh()
        await discovery.close()
        model = catalog.default_name(Modality.IMAGE)
        if model is None or model not in catalog.models:
            raise RuntimeError(f"Triton serves no default image model ({dict(catalog.problems)})")
        card = catalog.models[model].card
        async for event in stream.events():
            request = parse_request(
                event.value,
                list(event.message.headers or []),
                modality=Modality.IMAGE,
                max_payload_bytes=settings.contract.max_payload_bytes,
            )
            result = await triton.infer(model, request.data, card.output_names())
            total_ms = (datetime.now(UTC) - request.time).total_seconds() * 1000
            prediction = task_prediction(
                request,
                card,
                result,
                timing=Timing(queued_ms=0.0, inference_ms=0.0, total_ms=max(0.0, total_ms)),
                k=inference.top_k,
                full_probabilities_max_classes=inference.full_probabilities_max_classes,
            )
            record = prediction.to_kafka()
            await predictions.send(key=record.key, value=record.value)

    return app


def main() -> None:
    """Run the baseline worker until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.log)
    faust.Worker(
        build_naive_app(settings), loglevel="warning", override_logging=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
