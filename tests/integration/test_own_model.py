"""Serving a model of one's own: ``dlstream models add`` with ONNX and TorchScript files, the owner's training
command, rollback, and version swaps under traffic, on Tritons of the tests' own over empty repositories."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dlstream.adapters.redis.drift_store import with_store
from dlstream.client.publisher import Outgoing, Publisher
from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.domain.contract import Modality, new_request
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.preprocess.image import encode_png
from dlstream.models.zoo.data.photos import PHOTOS, photo
from dlstream.repository.add import AddError, AddRequest, add_model
from dlstream.tools.demo import CONTENT_TYPES
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.drift import MONITOR_ARGV, drift_settings, events_of, retraining_outcome
from tests.integration.workers import (
    Sample,
    Worker,
    deployment_settings,
    dlstream,
    raw_outcomes,
    send_and_flush,
    wait_for_predictions,
)
from tests.own_model import tones

pytestmark = pytest.mark.integration

LITE1_PREPROCESS = [
    "colour=RGB",
    "size=240",
    "resize=shorter-side",
    "resize_to=274",
    "scale=1",
    "mean=127",
    "std=128",
]


class TinyImageNet(nn.Module):
    """Logits over ``classes`` from an RGB image (or a flat vector when ``flat``)."""

    def __init__(self, classes: int, *, flat: bool = False) -> None:
        super().__init__()
        self.flat = flat
        self.head = nn.Linear(3 * 16 * 16 if flat else 3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(x if self.flat else x.mean(dim=(2, 3)))
        return logits


class TokenNet(nn.Module):
    """Takes int64 token ids: not what an image preprocessing makes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.embed(x).mean(dim=1)
        return pooled


def _onnx(path: Path, module: nn.Module, example: torch.Tensor) -> Path:
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    return path


def _snapshot(repo: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(repo)), p.stat().st_size, p.stat().st_mtime_ns) for p in repo.rglob("*"))


def test_bad_models_add_inputs_fail_clearly_and_leave_the_repository_as_it_was(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    (repo / "taken" / "1").mkdir(parents=True)
    (repo / "taken" / "1" / "card.json").write_text("{}")
    files = tmp_path / "files"
    files.mkdir()
    good = _onnx(files / "good.onnx", TinyImageNet(3), torch.zeros(1, 3, 16, 16))
    flat = _onnx(files / "flat.onnx", TinyImageNet(3, flat=True), torch.zeros(1, 3 * 16 * 16))
    tokens = _onnx(files / "tokens.onnx", TokenNet(), torch.zeros(1, 4, dtype=torch.int64))
    corrupt = files / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx graph" * 50)
    three, four = files / "three.txt", files / "four.txt"
    three.write_text("red\ngreen\nblue\n")
    four.write_text("red\ngreen\nblue\ncyan\n")
    reference = files / "reference"
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        (reference / f"{i}.png").write_bytes(encode_png(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)))
    empty, garbage = files / "empty", files / "garbage"
    empty.mkdir()
    garbage.mkdir()
    for i in range(24):
        (garbage / f"{i}.png").write_bytes(b"not a png at all")
    base = AddRequest(
        name="colours",
        modality=Modality.IMAGE,
        source_format="onnx",
        model_file=good,
        labels_file=three,
        reference_dir=reference,
        preprocess={"colour": "RGB", "size": "16"},
    )
    cases: dict[str, tuple[dict[str, object], str]] = {
        "missing file": ({"model_file": files / "nowhere.onnx"}, "does not exist"),
        "label count": ({"labels_file": four}, "has 3 values per sample; the labels file names 4"),
        "input rank": ({"model_file": flat}, "rank 2"),
        "input size": ({"preprocess": {"colour": "RGB", "size": "32"}}, "[batch, 3, 32, 32]"),
        "dtype": ({"model_file": tokens}, "unsupported input dtype tensor(int64)"),
        "corrupt onnx": ({"model_file": corrupt}, "is not a model onnxruntime can load"),
        "unknown key": (
            {"preprocess": {"colour": "RGB", "size": "16", "zoom": "2"}},
            "unknown preprocess key zoom",
        ),
        "bad value": ({"preprocess": {"colour": "CMYK", "size": "16"}}, "colour"),
        "empty reference": ({"reference_dir": empty}, "holds 0 image samples"),
        "undecodable reference": ({"reference_dir": garbage}, "24 of 24 reference samples do not decode"),
        "name clash": ({"name": "taken"}, "a model named 'taken' exists"),
        "option of another task": ({"task_options": {"threshold": "0.3"}}, "it applies to multilabel models"),
        "labels of an embedder": (
            {"task": "embedding", "task_options": {"dims": "3"}},
            "an embedding model has no labels",
        ),
        "detector without labels": ({"task": "detection", "labels_file": None}, "needs --labels"),
        "no vocabulary": ({"task": "sequence", "labels_file": None}, "vocabulary=FILE"),
        "dynamic width of a fixed input": (
            {"preprocess": {"colour": "RGB", "height": "16", "resize": "fixed-height"}},
            "a fixed width of 16",
        ),
        "vector width": (
            {"task": "embedding", "task_options": {"dims": "5"}, "labels_file": None},
            "the vector has 3 values; the card says 5",
        ),
        "value names": ({"task": "regression", "labels_file": four}, "3 values for 4 names"),
    }
    before = _snapshot(repo)
    for case, (change, message) in cases.items():
        request = AddRequest(**{**base.__dict__, **change})
        with pytest.raises(AddError) as caught:
            add_model(repo, request)
        assert message in str(caught.value), f"{case}: {caught.value}"
        assert _snapshot(repo) == before, f"{case} changed the repository"
        print(f"{case}: {caught.value}")
    added = add_model(repo, base)
    assert read_card(added.path / "1").labels == ["red", "green", "blue"]
    assert sorted(p.name for p in added.path.iterdir()) == ["1", "config.pbtxt", "configs", "reference"]


def _lite1_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The walkthrough's own commands: export the pretrained EfficientNet-Lite1 to ONNX, write reference
    photos."""
    out, reference = tmp_path / "own-model", tmp_path / "own-model" / "reference"
    for script, args in (("export_efficientnet_lite1.py", [out]), ("photo_crops.py", [reference, 40])):
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "scripts" / "own_model" / script), *map(str, args)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return out / "lite1.onnx", out / "labels.txt", reference


def test_a_pretrained_onnx_model_never_trained_here_is_added_while_the_stack_runs(
    empty_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    onnx_file, labels_file, reference = _lite1_files(tmp_path)
    deployed = deployment_settings(empty_triton.settings, topics, group_id)
    worker = Worker(deployed, tmp_path / "worker.log", repository=empty_triton.repository).start()
    try:
        started = time.monotonic()
        args = ["models", "add", "lite1", "--modality", "image", "--onnx", str(onnx_file)]
        args += ["--labels", str(labels_file), "--reference", str(reference), "--embedding-output", "1"]
        for pair in LITE1_PREPROCESS:
            args += ["--preprocess", pair]
        print(dlstream(deployed, *args).stdout.strip())
        added_after = time.monotonic() - started
        rng = np.random.default_rng(3)
        payloads = [encode_png(photo(name)) for name in PHOTOS]
        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            image = photo(name)
            for _ in range(24):
                side = int(min(image.shape[:2]) * rng.uniform(0.5, 1.0))
                top = int(rng.integers(0, image.shape[0] - side + 1))
                left = int(rng.integers(0, image.shape[1] - side + 1))
                payloads.append(encode_png(image[top : top + side, left : left + side]))
        content = CONTENT_TYPES[Modality.IMAGE]
        samples = [
            Sample(
                Modality.IMAGE,
                new_request(Modality.IMAGE, p, content_type=content, source="t", model="lite1"),
                -1,
            )
            for p in payloads
        ]
        send_and_flush(deployed, samples)
        found = wait_for_predictions(deployed, {s.event.id for s in samples})
        flowing_after = time.monotonic() - started
        assert len(found) == len(samples)
        print(
            f"models add took {added_after:.1f} s; all {len(samples)} predictions after {flowing_after:.1f} s"
        )
        assert flowing_after <= 30.0 + len(samples) / 5  # the first within 30 s; the rest at the model's pace
        version_dir = empty_triton.repository / "lite1" / "1"
        card = read_card(version_dir)
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        assert card.preprocessing is not None
        prepare = preprocessor(card.preprocessing)
        in_process = [
            card.labels[int(session.run(None, {"pixels": prepare.inputs([p]).numpy()})[0].argmax())]
            for p in payloads
        ]
        served = [found[s.event.id].classification.label for s in samples]
        agreement = float(np.mean([a == b for a, b in zip(served, in_process, strict=True)]))
        print(
            f"Triton and onnxruntime in-process agree on {agreement:.1%} of {len(payloads)}; "
            f"photos: {served[:3]}"
        )
        assert agreement >= 0.99
        assert {p.data.model_version for p in found.values()} == {"1"}
        assert worker.terminate() == 0
    finally:
        worker.stop()

    # It names no training command: a retraining job ends "no-recipe", and the model stays as it is.
    report = json.loads(
        dlstream(deployed, "models", "retrain", "--model", "lite1").stdout.strip().splitlines()[-1]
    )
    assert report["promoted"] is False
    run = with_store(deployed, lambda store: store.retrain_context("lite1")).run
    assert run is not None
    assert run.state == "no-recipe"
    assert [p.name for p in (empty_triton.repository / "lite1").iterdir() if p.name.isdigit()] == ["1"]


def _publish_in_background(
    settings: Settings, payloads: list[bytes], rate: float, stop: threading.Event, limit: int
) -> tuple[threading.Thread, list[str]]:
    """Publish ``payloads`` over and over at ``rate`` from a thread, 20 at a time, until ``stop`` is set or
    ``limit`` events are sent; the ids sent so far grow as the stream goes."""
    ids: list[str] = []
    items = [Outgoing(p, CONTENT_TYPES[Modality.AUDIO], f"tone-{i}") for i, p in enumerate(payloads)]
    stream = itertools.islice(itertools.cycle(items), limit)

    def run() -> None:
        with Publisher(settings, source="tests/swaps") as publisher:
            while not stop.is_set():
                chunk = list(itertools.islice(stream, 20))
                if not chunk:
                    return
                sent = publisher.publish_all(Modality.AUDIO, chunk, rate=rate, progress=False)
                ids.extend(event.id for event, _ in sent)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, ids


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow(reason="the owner's training command runs in a job, then two swaps under a stream")
def test_a_torchscript_audio_model_retrained_by_its_owners_command_promoted_rolled_back_under_traffic(
    empty_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    model_file = tmp_path / "tones.pt"
    tones.build(model_file)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(tones.LABELS) + "\n")
    tones.write_reference(tmp_path / "reference", 60, seed=2)
    deployed = drift_settings(
        empty_triton.settings,
        topics,
        group_id,
        repository=empty_triton.repository,
        retrain_launcher="local",
        retrain_min_feedback=300,  # the job starts once every label is in: the same data in every run
        log_dir=tmp_path / "retrain",
    )
    # Learning the shifted tones costs the tiny network a little on the original ones.
    deployed = deployed.model_copy(
        update={"retrain": deployed.retrain.model_copy(update={"max_base_drop": 0.2})}
    )
    script = PROJECT_ROOT / "tests" / "own_model" / "tones.py"
    command = f"{sys.executable} {script} train {{data}} {{model}} {{output}}"
    args = ["models", "add", "tones", "--modality", "audio", "--torchscript", str(model_file)]
    args += [
        "--labels",
        str(labels_file),
        "--reference",
        str(tmp_path / "reference"),
        "--embedding-output",
        "1",
    ]
    args += ["--train-command", command, "--default"]
    for key, value in tones.PREPROCESS.items():
        args += ["--preprocess", f"{key}={value}"]
    print(dlstream(deployed, *args).stdout.strip())

    worker = Worker(deployed, tmp_path / "worker.log", repository=empty_triton.repository).start()
    monitor = Worker(
        deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, repository=empty_triton.repository
    ).start()
    try:
        clean = events_of(Modality.AUDIO, *tones.tones(90, seed=3))
        send_and_flush(deployed, clean)
        found = wait_for_predictions(deployed, {s.event.id for s in clean})
        assert {p.data.model_version for p in found.values()} == {"1"}
        clean_accuracy = np.mean(
            [found[s.event.id].classification.label == tones.LABELS[s.label] for s in clean]
        )
        assert clean_accuracy >= 0.9

        drifted = events_of(Modality.AUDIO, *tones.tones(300, seed=4, shift=2.2))
        send_and_flush(deployed, drifted)
        found = wait_for_predictions(deployed, {s.event.id for s in drifted})
        accuracy_v1 = np.mean(
            [found[s.event.id].classification.label == tones.LABELS[s.label] for s in drifted]
        )
        with Publisher(deployed) as publisher:
            for sample in drifted:
                publisher.publish_label(sample.event.id, tones.LABELS[sample.label])
        run = retraining_outcome(deployed, "tones", timeout_s=480)
        assert run["state"] == "promoted", run
        report = json.loads(run["detail"])
        print(f"shifted tones: v1 {accuracy_v1:.3f}; the owner's command: {report}")
        assert report["new_version"] == 2
        assert report["candidate_feedback_accuracy"] >= report["serving_feedback_accuracy"] + 0.2

        # A paced stream while version 1 comes back and version 2 is promoted again, going on for 120 events
        # (3 s) after the second swap: nothing fails. It lasts as long as the swaps take (longer on a busy
        # machine), so its rate is what keeps it small.
        payloads, _ = tones.tones(600, seed=5, shift=1.0)
        stop = threading.Event()
        limit = 24_000  # ten minutes at 40 events/s
        thread, ids = _publish_in_background(deployed, payloads, rate=40.0, stop=stop, limit=limit)

        try:
            # The worker keeps up with the stream: events sent after a swap completed are served by the
            # version it left in place.
            _until(lambda: len(ids) >= 120, 120, "the stream to flow")
            print(dlstream(deployed, "models", "rollback", "tones").stdout.strip())
            swapped_at = len(ids)
            _until(lambda: len(ids) >= swapped_at + 120, 120, "part of the stream after the rollback")
            print(dlstream(deployed, "models", "rollback", "tones", "--to", "2").stdout.strip())
            swapped_at = len(ids)
            assert swapped_at < limit, "the stream ended before the second swap; it says nothing about it"
            _until(lambda: len(ids) >= min(swapped_at + 120, limit), 120, "part of the stream after the swap")
        finally:
            stop.set()
            thread.join(timeout=300)
        sent = len(ids)
        streamed = wait_for_predictions(deployed, set(ids), idle_timeout_s=120)
        assert len(streamed) == sent
        letters = raw_outcomes(deployed)[1]
        assert letters == [], [d.error for d in letters[:3]]
        versions = [streamed[i].data.model_version for i in ids]
        swaps = sum(1 for a, b in itertools.pairwise(versions) if a != b)
        print(
            f"{sent} events across two swaps: versions {sorted(set(versions))}, {swaps} changes in send order"
        )
        # Version 2 before the rollback, version 1 after it, version 2 again for the events sent after the
        # second swap completed (the worker keeps up with the stream).
        assert (versions[0], versions[-1]) == ("2", "2"), versions
        assert "1" in versions

        [row] = [
            json.loads(line)
            for line in dlstream(deployed, "models", "list", "--json").stdout.splitlines()
            if line.startswith("{") and json.loads(line).get("name") == "tones"
        ]
        print(row)
        assert (row["format"], row["versions"], row["serving"]) == ("torchscript", [1, 2], [2])
        assert (row["retraining"], row["last_retraining"], row["default"]) == ("command", "promoted", True)
    finally:
        monitor.stop()
        worker.stop()


def _text(length: int, rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("abcdefghij klmnop")) for _ in range(length)).strip() or "x"


def test_a_triton_model_folder_of_its_owner_is_added_and_routed(
    empty_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    sizes = {"short": 10, "medium": 40, "long": 100}
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("short\nmedium\nlong\n")
    reference = tmp_path / "reference"
    for label, size in sizes.items():
        (reference / label).mkdir(parents=True)
        lines = [_text(size + int(rng.integers(-3, 4)), rng) for _ in range(10)]
        (reference / label / "texts.txt").write_text("\n".join(lines) + "\n")
    deployed = deployment_settings(empty_triton.settings, topics, group_id)
    folder = PROJECT_ROOT / "tests" / "own_model" / "lengths"
    args = ["models", "add", "lengths", "--modality", "text", "--triton", str(folder)]
    print(dlstream(deployed, *args, "--labels", str(labels_file), "--reference", str(reference)).stdout)
    card = read_card(empty_triton.repository / "lengths" / "1")
    assert (card.source_format, card.payload_input, card.outputs.scores) == ("triton", "TEXT", "SCORES")
    assert card.max_batch_size == 16  # from its config: the workers send it requests of at most 16
    assert (empty_triton.repository / "lengths" / "1" / "reference.json").exists()

    worker = Worker(deployed, tmp_path / "worker.log", repository=empty_triton.repository).start()
    try:
        truth = [label for label in sizes for _ in range(10)]
        texts = [_text(sizes[label], rng).encode() for label in truth]
        samples = events_of(Modality.TEXT, texts, [list(sizes).index(label) for label in truth])
        send_and_flush(deployed, samples)
        found = wait_for_predictions(deployed, {s.event.id for s in samples})
        assert {p.data.model for p in found.values()} == {"lengths"}
        right = sum(found[s.event.id].classification.label == truth[i] for i, s in enumerate(samples))
        assert right == len(samples)
        probabilities = found[samples[0].event.id].classification.probabilities
        assert probabilities is not None
        assert abs(sum(probabilities) - 1.0) < 1e-3  # the logits were turned into probabilities
        assert worker.terminate() == 0
    finally:
        worker.stop()
