"""The stream benchmark's latency runs: idle events, bursts and a curve of load levels through a running
worker."""

from __future__ import annotations

import time
import urllib.request

from tqdm import tqdm

from dlstream.client.publisher import Publisher
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality, RequestEvent
from dlstream.tools.bench.collector import Collector
from dlstream.tools.bench.latency import (
    Arrival,
    BacklogSample,
)


def scrape_batches(settings: Settings) -> tuple[float, float]:
    """The worker's ``dlstream_batch_size`` histogram: (sum of batch sizes, number of batches)."""
    url = f"http://127.0.0.1:{settings.inference.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("dlstream_batch_size_sum", "dlstream_batch_size_count")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values.get("dlstream_batch_size_sum", 0.0), values.get("dlstream_batch_size_count", 0.0)


class LatencyRun:
    """One running worker on fresh topics, one publisher, and a subscriber reading the predictions as they
    come. The publisher and the subscriber stay open for the whole run, so that no measured event pays for
    connecting or fetching metadata."""

    def __init__(self, settings: Settings, payloads: list[bytes]) -> None:
        self.settings = settings
        self.payloads = payloads
        self.collector = Collector(settings, [settings.topics.prediction("image")])
        self.publisher = Publisher(settings, source="dlstream/bench")

    def start(self, warm_up: int) -> None:
        """Start reading, and send ``warm_up`` events through the worker before anything is measured."""
        self.collector.start()
        sent = [self._publish(i) for i in range(warm_up)]
        self.publisher.flush()
        self.collector.wait_for({e.id for e in sent})

    def stop(self) -> None:
        """Close the publisher and stop reading."""
        self.publisher.close()
        self.collector.stop()

    def _publish(self, i: int) -> RequestEvent:
        payload = self.payloads[i % len(self.payloads)]
        return self.publisher.publish(Modality.IMAGE, payload, content_type="image/png")

    def idle(self, count: int) -> list[Arrival]:
        """``count`` single events, each sent after the previous prediction arrived."""
        sent = []
        for i in tqdm(range(count), desc="idle", unit="ev"):
            event = self._publish(i)
            self.collector.wait_for({event.id})
            sent.append(event)
            time.sleep(0.05)  # a pause between events keeps the worker idle when the next one comes
        return self.collector.arrivals(sent)

    def burst(self, count: int) -> list[Arrival]:
        """``count`` events published as fast as the publisher goes; their arrivals once all came."""
        sent = [self._publish(i) for i in range(count)]
        self.publisher.flush()
        self.collector.wait_for({e.id for e in sent})
        return self.collector.arrivals(sent)

    def level(
        self, offered_eps: float, seconds: float, *, progress: bool = True
    ) -> tuple[list[Arrival], list[BacklogSample], float]:
        """Events offered at ``offered_eps`` for ``seconds``: their arrivals, the backlog sampled every
        second, and the mean batch size the worker formed meanwhile."""
        batches_before = scrape_batches(self.settings)
        count = max(20, int(offered_eps * seconds))
        interval = 1.0 / offered_eps
        sent: list[RequestEvent] = []
        samples: list[BacklogSample] = []
        ids: set[str] = set()
        started = time.monotonic()
        next_sample = started
        for i in tqdm(range(count), desc=f"{offered_eps:.0f} ev/s", unit="ev", disable=not progress):
            due = started + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            event = self._publish(i)
            sent.append(event)
            ids.add(event.id)
            if now >= next_sample:
                samples.append(BacklogSample(now - started, len(sent), self.collector.count(ids)))
                next_sample += 1.0
        self.publisher.flush()
        self.collector.wait_for(ids)
        total, batches = (a - b for a, b in zip(scrape_batches(self.settings), batches_before, strict=True))
        return self.collector.arrivals(sent), samples, (total / batches if batches else 0.0)
