"""Batching requests for a Triton Python model: one bad request never fails the others."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from pipelines.preprocess.errors import PayloadError
from pipelines.preprocess.image import decode_digit, encode_png
from pipelines.serving import Outputs, run_requests


class FakeRunner:
    """Decodes b"<int>" payloads; forward returns one-hot probabilities and records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def decode(self, payload: bytes) -> Any:
        if not payload.isdigit():
            raise PayloadError(f"not a number: {payload!r}")
        return int(payload)

    def forward(self, items: list[Any]) -> Outputs:
        self.batches.append(len(items))
        probs = np.eye(10, dtype=np.float32)[items]
        return probs, np.array(items, dtype=np.float32)[:, None]


def _request(*payloads: bytes) -> npt.NDArray[np.object_]:
    return np.array([[p] for p in payloads], dtype=object)


def test_good_requests_run_as_one_batch_and_keep_their_order() -> None:
    runner = FakeRunner()
    results = run_requests(runner, [_request(b"1", b"2"), _request(b"3"), _request(b"4", b"5", b"6")])
    assert runner.batches == [6]
    assert [r[0].argmax(axis=1).tolist() for r in results if not isinstance(r, Exception)] == [
        [1, 2],
        [3],
        [4, 5, 6],
    ]


def test_a_bad_payload_fails_only_its_own_request() -> None:
    runner = FakeRunner()
    results = run_requests(runner, [_request(b"1"), _request(b"2", b"oops"), _request(b"3")])
    assert isinstance(results[1], PayloadError)
    assert "oops" in str(results[1])
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[2], Exception)
    assert results[2][0].argmax() == 3
    assert runner.batches == [2]


def test_all_bad_requests_never_call_the_model() -> None:
    runner = FakeRunner()
    results = run_requests(runner, [_request(b"x"), np.array([b"1"], dtype=object)])
    assert all(isinstance(r, PayloadError) for r in results)
    assert "[n, 1]" in str(results[1])
    assert runner.batches == []


def test_digit_decoding_round_trips_png_and_refuses_garbage() -> None:
    image = np.zeros((28, 28), dtype=np.uint8)
    image[10:18, 12:16] = 255
    tensor = decode_digit(encode_png(image))
    assert tensor.shape == (1, 28, 28)
    assert tensor.dtype == np.float32
    assert tensor.max() > 2.0 > tensor.min()
    with pytest.raises(PayloadError, match="cannot decode image"):
        decode_digit(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="BMP")
    with pytest.raises(PayloadError, match="not PNG or JPEG"):
        decode_digit(buffer.getvalue())


def test_a_larger_grayscale_image_is_resized() -> None:
    tensor = decode_digit(encode_png(np.zeros((56, 56), dtype=np.uint8)))
    assert tensor.shape == (1, 28, 28)
