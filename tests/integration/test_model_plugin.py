"""A fifth model that lives in one test-only module (``tests/plugins/shapes.py``) and one entry-point
registration: built by the CLI, served by two Tritons on one repository, routed by a worker that learns it
from Triton, drift-monitored, retrained after an alert, and promoted on both Tritons before the job ends:
the whole drift loop under a partial shift (half of the traffic inverted), on a network that trains in
seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from dlstream.client.publisher import Publisher
from dlstream.config.settings import Settings, settings_env
from dlstream.domain.contract import Modality
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.drift import (
    MONITOR_ARGV,
    WINDOW,
    after_promotion,
    drift_settings,
    events_of,
    judged_windows,
    retraining_outcome,
)
from tests.integration.triton_models import private_triton
from tests.integration.workers import Sample, Worker, send_and_flush, wait_for_predictions
from tests.plugins import shapes

pytestmark = pytest.mark.integration


def plugin_environment(tmp_path: Path) -> dict[str, str]:
    """``PYTHONPATH`` holding the project root and a distribution whose only content is the entry point
    ``shapes = tests.plugins.shapes:SPEC`` in the ``dlstream.models`` group."""
    site = tmp_path / "site"
    dist = site / "dlstream_test_shapes-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dlstream-test-shapes\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[dlstream.models]\nshapes = tests.plugins.shapes:SPEC\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(PROJECT_ROOT)])}


def _accuracy(settings: Settings, samples: list[Sample]) -> tuple[float, set[str]]:
    predicted = wait_for_predictions(settings, {s.event.id for s in samples})
    assert len(predicted) == len(samples)
    assert {p.data.model for p in predicted.values()} == {"shapes"}
    hits = sum(predicted[s.event.id].classification.label == shapes.LABELS[s.label] for s in samples)
    return hits / len(samples), {p.data.model_version for p in predicted.values()}


def _partial_shift(
    inverted_seed: int, upright_seed: int, per_class: int
) -> tuple[list[Sample], list[Sample]]:
    """Inverted shapes, and all the events in send order: inverted and upright alternating."""
    shifted = events_of(Modality.IMAGE, *shapes.payloads(inverted_seed, per_class, inverted=True))
    upright = events_of(Modality.IMAGE, *shapes.payloads(upright_seed, per_class))
    return shifted, [s for pair in zip(shifted, upright, strict=True) for s in pair]


@pytest.mark.slow(
    reason="the whole drift loop: a model built, two Tritons started, a retraining job promoting on both "
    "(128 s beside a CPU hog)"
)
def test_a_plugin_module_is_built_served_routed_monitored_and_retrained_on_two_tritons(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    plugin_env = plugin_environment(tmp_path)
    repository = tmp_path / "repository"
    repository.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "dlstream.cli", "models", "build", "--model", "shapes", "--no-cache"],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            **settings_env(settings),
            **plugin_env,
            "DLSTREAM_TRITON__MODEL_REPOSITORY": str(repository),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "shapes" in build.stdout
    assert sorted(p.name for p in (repository / "shapes").iterdir()) == ["1", "config.pbtxt", "configs"]

    first, second = (private_triton(settings, repository, tmp_path / f"triton-{i}") for i in (1, 2))
    first.up()
    try:
        second.up()
        replicas = ",".join(t.settings.triton.http_url for t in (first, second))
        deployed = drift_settings(
            first.settings,
            topics,
            group_id,
            repository=repository,
            retrain_launcher="local",
            retrain_min_feedback=300,  # the job starts once every label is in: the same data in every run
            alert_cooldown_s=0.0,  # so that version 2 could raise an alert of its own at once
            log_dir=tmp_path / "retrain",
        )
        deployed = deployed.model_copy(
            update={
                "triton": deployed.triton.model_copy(update={"replicas": replicas}),
                # Learning inverted shapes costs the small network a little on the upright ones.
                "retrain": deployed.retrain.model_copy(update={"epochs": 10, "max_base_drop": 0.1}),
            }
        )
        worker = Worker(deployed, tmp_path / "worker.log", repository=repository).start()
        monitor = Worker(
            deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, repository=repository, extra_env=plugin_env
        ).start()
        try:
            clean_payloads, clean_labels = shapes.payloads(11, 50)
            clean = events_of(Modality.IMAGE, clean_payloads, clean_labels)
            send_and_flush(deployed, clean)
            clean_accuracy, versions = _accuracy(deployed, clean)
            assert versions == {"1"}
            assert clean_accuracy >= 0.9
            # Read as a backlog, the shifted events would reach the monitor one partition after another,
            # mixed with the clean ones into fewer shifted windows.
            judged_windows(deployed, "shapes", "1", len(clean) // WINDOW)

            # Half of the traffic turns to inverted shapes: an alert, retraining on the labelled traffic,
            # version 2 promoted on both Tritons.
            shifted, mixed = _partial_shift(12, 15, 50)
            send_and_flush(deployed, mixed)
            accuracy_v1, versions = _accuracy(deployed, shifted)
            assert versions == {"1"}
            with Publisher(deployed) as publisher:
                for sample in mixed:
                    publisher.publish_label(sample.event.id, shapes.LABELS[sample.label])

            run = retraining_outcome(deployed, "shapes", timeout_s=480)
            assert run["state"] == "promoted", run
            report = json.loads(run["detail"])
            assert report["new_version"] == 2
            # The job reported success only once every replica served version 2.
            for triton in (first, second):
                client = triton_http.InferenceServerClient(triton.settings.triton.http_url)
                try:
                    assert client.is_model_ready("shapes", "2"), triton.settings.triton.http_url
                finally:
                    client.close()

            # The same mix goes on, served by version 2: better on the inverted half.
            shifted, mixed = _partial_shift(13, 16, 25)
            send_and_flush(deployed, mixed)
            _, versions = _accuracy(deployed, mixed)
            accuracy_v2, _ = _accuracy(deployed, shifted)
            print(f"inverted shapes: v1 {accuracy_v1:.3f}, v2 {accuracy_v2:.3f}; job {report}")
            assert versions == {"2"}
            assert accuracy_v2 >= accuracy_v1 + 0.2

            # Base traffic alone is traffic version 2 was built for too: the alert resolves, none is raised.
            base_payloads, base_labels = shapes.payloads(14, 100)
            version_2 = after_promotion(
                deployed, "shapes", lambda: events_of(Modality.IMAGE, base_payloads, base_labels)
            )
            print(f"version 2 after base traffic: {version_2}")
        finally:
            monitor.stop()
            worker.stop()
    finally:
        first.down()
        second.down()
