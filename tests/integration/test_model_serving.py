"""Built models served by the real Triton from raw bytes agree with the same model run in-process."""

from __future__ import annotations

import json
import queue
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pipelines.data.mnist import load_mnist
from pipelines.data.split import stratified_split
from pipelines.preprocess.image import encode_png
from pipelines.serving import load_runner, run_requests
from services.common.settings import Settings
from tests.integration.conftest import PROJECT_ROOT


def _payloads(batch: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("PAYLOAD", [len(batch), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[p] for p in batch], dtype=object))
    return tensor


def _held_out_digits(seed: int) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    data = load_mnist()
    split = stratified_split(data.labels, 0.2, seed)
    return [encode_png(image) for image in data.images[split.test]], data.labels[split.test]


def test_digits_over_grpc_match_the_in_process_model_on_held_out_samples(settings: Settings) -> None:
    version_dir = PROJECT_ROOT / settings.triton.model_repository / "digits" / "1"
    seed = json.loads((version_dir / "metrics.json").read_text())["seed"]
    payloads, truth = _held_out_digits(seed)

    runner = load_runner(version_dir, "cpu")
    local = []
    for start in range(0, len(payloads), 64):
        chunk = np.array([[p] for p in payloads[start : start + 64]], dtype=object)
        result = run_requests(runner, [chunk])[0]
        assert not isinstance(result, Exception)
        local.append(result[0].argmax(axis=1))
    in_process = np.concatenate(local)

    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    try:
        served = []
        for start in range(0, len(payloads), 32):
            response = client.infer("digits", [_payloads(payloads[start : start + 32])])
            probabilities = response.as_numpy("PROBABILITIES")
            assert probabilities is not None
            assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
            served.append(probabilities.argmax(axis=1))
    finally:
        client.close()
    triton = np.concatenate(served)

    agreement = float((triton == in_process).mean())
    assert len(triton) == len(truth) == 1000
    assert agreement >= 0.99, f"Triton and in-process top-1 agree on {agreement:.2%}"
    assert float((triton == truth).mean()) >= 0.97


def test_a_bad_request_fails_alone_while_concurrent_good_requests_succeed(settings: Settings) -> None:
    payloads, truth = _held_out_digits(0)
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    results: queue.Queue[tuple[int, Any, Any]] = queue.Queue()

    def done(index: int, result: Any, error: Any) -> None:
        results.put((index, result, error))

    requests: list[list[bytes]] = [[payloads[i]] for i in range(12)]
    bad_index = 5
    requests[bad_index] = [b"\x89PNG\r\n\x1a\n truncated"]
    try:
        for index, batch in enumerate(requests):
            client.async_infer("digits", [_payloads(batch)], callback=partial(done, index))
        outcomes = [results.get(timeout=30) for _ in requests]
    finally:
        client.close()
    for index, result, error in outcomes:
        if index == bad_index:
            assert isinstance(error, InferenceServerException)
            assert "cannot decode image" in str(error)
        else:
            assert error is None, error
            assert int(result.as_numpy("PROBABILITIES").argmax()) in range(10)
    good = {i: r for i, r, e in outcomes if e is None}
    correct = sum(int(r.as_numpy("PROBABILITIES").argmax()) == truth[i] for i, r in good.items())
    assert correct >= 10
