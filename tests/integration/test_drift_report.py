"""The drift report from a real monitor's Redis state: written by `dlstream drift report`, served on the
monitor's web port, and rendered by headless Chromium into a screenshot that shows the figures."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlstream.adapters.redis.drift_store import DriftStore, async_redis
from dlstream.config.settings import Settings
from dlstream.drift.metrics import DriftMetrics
from dlstream.drift.monitor import DriftMonitor
from tests.drift_samples import Published, predictions, reference_document
from tests.integration.conftest import TopicFactory
from tests.integration.drift import MONITOR_ARGV, WINDOW, drift_settings, wait_for
from tests.integration.workers import Worker, dlstream

pytestmark = pytest.mark.integration


async def _feed(settings: Settings) -> None:
    """Clean windows, then drifted ones, of a model ``m`` through the monitor's own code and real Redis."""
    rng = np.random.default_rng(7)
    store = DriftStore(async_redis(settings.redis), settings.drift)
    try:
        await store.publish_references({("m", "1"): reference_document(rng)})
        monitor = DriftMonitor(settings, store, metrics=DriftMetrics(), publish=Published())
        for _ in range(6):
            await monitor.observe(predictions(rng, WINDOW))
        for _ in range(4):
            await monitor.observe(predictions(rng, WINDOW, shift=4.0))
    finally:
        await store.close()


def screenshot(page: Path, png: Path) -> Image.Image:
    """Headless Chromium's screenshot of a local page."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing; run `make setup` (Debian package chromium)"
    subprocess.run(
        [
            chromium,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            f"--screenshot={png}",
            "--window-size=1000,1400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Image.open(png).convert("RGB")


def test_the_drift_report_shows_windows_alerts_and_class_mix_and_renders_in_chromium(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    deployed = drift_settings(settings, topics, group_id)
    asyncio.run(_feed(deployed))
    page = tmp_path / "report.html"
    printed = dlstream(deployed, "drift", "report", "--model", "m", "--out", str(page)).stdout
    assert "1 model(s)" in printed
    text = page.read_text()
    assert "<h2>m</h2>" in text
    assert "OPEN ALERT on v1" in text
    assert text.count("data:image/png;base64,") == 2  # the timeline, and v1's class mix and confidence

    image = screenshot(page, tmp_path / "report.png")
    assert image.size == (1000, 1400)
    pixels = np.asarray(image).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 200, "the screenshot looks blank"
    crimson = (pixels[:, 0] > 150) & (pixels[:, 1] < 80) & (pixels[:, 2] < 110)  # not the orange bars
    assert crimson.sum() > 150, "no alert line or flagged window marker on the screenshot"

    monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV).start()
    try:
        url = f"http://127.0.0.1:{deployed.drift.web_port}/report?model=m"
        assert deployed.redis.password is not None
        login = base64.b64encode(f"default:{deployed.redis.password.get_secret_value()}".encode()).decode()

        def served() -> str | None:
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Basic {login}"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        body = wait_for(served, timeout_s=120, what="the monitor's report page")
        # The page shows what Redis keeps behind its password: without it, or with another, it is refused.
        for header in ({}, {"Authorization": "Basic " + base64.b64encode(b"default:wrong").decode()}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=header), timeout=30)
            assert refused.value.code == 401
            assert refused.value.headers["WWW-Authenticate"].startswith("Basic")
            refused.value.close()
        assert "<h2>m</h2>" in body
        assert "OPEN ALERT on v1" in body
    finally:
        monitor.stop()
    history = json.loads(dlstream(deployed, "drift", "status", "--json").stdout)["m"]["versions"]["1"]
    assert history["windows"] == 10
