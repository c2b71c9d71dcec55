"""Every built model, served by the real Triton from raw bytes, agrees with the same model run in-process."""

from __future__ import annotations

import json
import queue
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.models.samples import held_out_payloads
from dlstream.models.serving import load_runner, run_requests
from dlstream.models.zoo.data.photos import PHOTOS
from tests.integration.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

BATCH = 16
AGREEMENT = 64


def _tensor(batch: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("PAYLOAD", [len(batch), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[p] for p in batch], dtype=object))
    return tensor


def _version_dir(settings: Settings, model: str) -> Path:
    return PROJECT_ROOT / settings.triton.model_repository / model / "1"


@pytest.mark.parametrize("model", ["digits", "speech_digits", "text_topics", "imagenet"])
def test_held_out_samples_over_grpc_match_the_in_process_model(settings: Settings, model: str) -> None:
    # The first AGREEMENT held-out samples, in requests of BATCH, served and run in-process. That the served
    # accuracy over every held-out sample matches the build's is shown through the whole pipeline by
    # test_inference_worker (1,000 events per modality).
    version_dir = _version_dir(settings, model)
    metrics = json.loads((version_dir / "metrics.json").read_text())
    payloads, truth = held_out_payloads(model, metrics["seed"])
    chunks = [payloads[i : i + BATCH] for i in range(0, min(AGREEMENT, len(payloads)), BATCH)]

    runner = load_runner(version_dir, "cpu")
    local = []
    for chunk in chunks:
        result = run_requests(runner, [np.array([[p] for p in chunk], dtype=object)])[0]
        assert not isinstance(result, Exception), result
        local.append(result[0].argmax(axis=1))
    in_process = np.concatenate(local)

    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    try:
        served = []
        for chunk in chunks:
            response = client.infer(model, [_tensor(chunk)])
            probabilities = response.as_numpy("PROBABILITIES")
            embedding = response.as_numpy("EMBEDDING")
            assert probabilities is not None
            assert embedding is not None
            assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
            assert embedding.shape == (len(chunk), 8)
            served.append(probabilities.argmax(axis=1))
    finally:
        client.close()
    triton = np.concatenate(served)

    agreement = float((triton == in_process).mean())
    assert len(triton) == min(AGREEMENT, len(payloads))
    # One disagreement is allowed: a top-1 tie that batching breaks the other way.
    assert (triton != in_process).sum() <= 1, f"{model}: Triton and in-process top-1 agree on {agreement:.2%}"
    if truth is None:
        labels = read_card(version_dir).labels
        named = [labels[i] for i in triton[: len(PHOTOS)]]
        assert all(name in PHOTOS[photo_name] for name, photo_name in zip(named, PHOTOS, strict=True)), named
    else:
        accuracy = float((triton == np.array(truth[: len(triton)])).mean())
        print(f"{model}: {agreement:.1%} agreement, top-1 {accuracy:.3f} on {len(triton)} served samples")


@pytest.mark.parametrize(
    ("model", "bad", "message"),
    [
        ("digits", b"\x89PNG\r\n\x1a\n truncated", "cannot decode image"),
        ("speech_digits", b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV"),
        ("text_topics", b"caf\xc3", "not valid UTF-8"),
        ("imagenet", b"GIF89a not a png", "cannot decode image"),
    ],
)
def test_a_bad_request_fails_alone_while_concurrent_good_requests_succeed(
    settings: Settings, model: str, bad: bytes, message: str
) -> None:
    metrics = json.loads((_version_dir(settings, model) / "metrics.json").read_text())
    payloads, _ = held_out_payloads(model, metrics["seed"])
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    results: queue.Queue[tuple[int, Any, Any]] = queue.Queue()

    def done(index: int, result: Any, error: Any) -> None:
        results.put((index, result, error))

    requests: list[list[bytes]] = [[payloads[i]] for i in range(12)]
    bad_index = 5
    requests[bad_index] = [bad]
    try:
        for index, batch in enumerate(requests):
            client.async_infer(model, [_tensor(batch)], callback=partial(done, index))
        outcomes = [results.get(timeout=60) for _ in requests]
    finally:
        client.close()
    for index, result, error in outcomes:
        if index == bad_index:
            assert isinstance(error, InferenceServerException)
            assert message in str(error)
        else:
            assert error is None, error
            assert result.as_numpy("PROBABILITIES").shape[0] == 1
