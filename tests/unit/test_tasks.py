"""Models of every task: the card's task and input shape, the postprocessing inside Triton, and the worker's
prediction of each task (bad model outputs become dead letters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from dlstream.adapters.triton.answers import task_prediction
from dlstream.adapters.triton.client import Inference
from dlstream.domain.card import (
    DetectionTask,
    EmbeddingTask,
    ImagePreprocessing,
    ModelCard,
    MultilabelTask,
    RegressionTask,
    SequenceTask,
    SourceModel,
)
from dlstream.domain.contract import (
    DetectionPrediction,
    Modality,
    MultilabelPrediction,
    PredictionEvent,
    SequencePrediction,
    Timing,
    new_request,
)
from dlstream.domain.errors import ContractError, DeadLetterReason
from dlstream.models.postprocess import OutputShapeError, ctc_greedy, detections, nms, task_outputs
from dlstream.models.preprocess.declared import Geometry, image_batch, preprocessor
from dlstream.models.preprocess.image import encode_png
from dlstream.models.triton_config import output_tensors
from dlstream.repository.task_options import TaskOptionError, parse_task

pytestmark = pytest.mark.unit

TIMING = Timing(queued_ms=1.0, inference_ms=1.0, total_ms=2.0)


def card_of(task: Any, labels: list[str], **preprocess: Any) -> ModelCard:
    return ModelCard(
        name="m",
        version=1,
        modality=Modality.IMAGE,
        task=task,
        labels=labels,
        preprocessing=ImagePreprocessing(colour="RGB", **({"size": 32} | preprocess)),
        source_format="onnx",
        source=SourceModel(file="model.onnx", scores_are="probabilities"),
    )


def test_an_input_of_width_by_height_is_declared_as_size_wxh_and_a_bad_one_says_how() -> None:
    spec = ImagePreprocessing.model_validate({"colour": "BGR", "size": "192x48"})
    assert (spec.width, spec.height, spec.input_shape) == (192, 48, [3, 48, 192])
    assert ImagePreprocessing.model_validate({"colour": "L", "size": 28}).input_shape == [1, 28, 28]
    with pytest.raises(ValidationError, match="WIDTHxHEIGHT"):
        ImagePreprocessing.model_validate({"colour": "L", "size": "192x"})
    with pytest.raises(ValidationError, match="only fixed-height takes a dynamic width"):
        ImagePreprocessing.model_validate({"colour": "L", "height": 48})
    dynamic = ImagePreprocessing.model_validate({"colour": "L", "height": 48, "resize": "fixed-height"})
    assert dynamic.input_shape == [1, 48, -1]


def test_each_task_takes_the_labels_it_means() -> None:
    assert card_of(RegressionTask(), ["age"]).labels == ["age"]
    assert card_of(SequenceTask(), []).labels == []
    with pytest.raises(ValidationError, match="at least 2 labels"):
        card_of({"kind": "classification"}, ["only"])
    with pytest.raises(ValidationError, match="has no labels"):
        card_of(EmbeddingTask(dims=4), ["x"])
    with pytest.raises(ValidationError, match="thresholds of unknown labels"):
        card_of(MultilabelTask(thresholds={"nope": 0.3}), ["a", "b"])


def _png(width: int, height: int, value: int = 200) -> bytes:
    return encode_png(np.full((height, width, 3), value, dtype=np.uint8))


def test_a_fixed_height_line_keeps_its_aspect_and_a_batch_pads_to_its_widest_with_the_pad_value() -> None:
    spec = ImagePreprocessing.model_validate(
        {
            "colour": "BGR",
            "height": 48,
            "resize": "fixed-height",
            "min_width": 100,
            "max_width": 300,
            "mean": [0.5],
            "std": [0.5],
            "pad_value": 127.5,
        }
    )
    prepare = preprocessor(spec)
    short, wide, huge = (prepare.decode(_png(w, 24)) for w in (40, 120, 1000))
    assert short.pixels.shape == (3, 48, 80)
    assert wide.pixels.shape == (3, 48, 240)
    assert huge.pixels.shape == (3, 48, 300)  # squeezed to max_width
    batch = image_batch([short, wide], spec).numpy()
    assert batch.shape == (2, 3, 48, 240)
    assert np.all(batch[0, :, :, 80:] == 0.0)  # 127.5 scaled and normalised
    assert image_batch([short], spec).shape == (1, 3, 48, 100)  # at least min_width
    fixed = spec.model_copy(update={"width": 200})
    assert preprocessor(fixed).decode(_png(40, 24)).pixels.shape == (3, 48, 200)


def test_bgr_reverses_the_channels_and_uint8_keeps_the_pixels() -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 250  # red
    rgb = ImagePreprocessing(colour="RGB", width=4, height=4, dtype="uint8", layout="HWC")
    bgr = rgb.model_copy(update={"colour": "BGR"})
    assert preprocessor(rgb).decode(encode_png(pixels)).pixels[0, 0].tolist() == [250, 0, 0]
    assert preprocessor(bgr).decode(encode_png(pixels)).pixels[0, 0].tolist() == [0, 0, 250]


def test_a_letterboxed_image_maps_its_boxes_back_to_the_original_pixels() -> None:
    spec = ImagePreprocessing(colour="RGB", width=64, height=64, resize="letterbox", pad_value=114)
    item = preprocessor(spec).decode(_png(128, 64))
    geometry = item.geometry
    assert (geometry.scale_x, geometry.pad_x, geometry.pad_y) == (0.5, 0, 16)
    assert item.pixels[:, 0, 0] == pytest.approx([114 / 255] * 3)  # the band above the image
    box = np.array([[10.0, 16.0, 42.0, 48.0]], dtype=np.float32)
    assert geometry.to_original(box).tolist() == [[20.0, 0.0, 84.0, 64.0]]


def test_ctc_greedy_merges_repeats_drops_blanks_and_keeps_a_repeat_split_by_a_blank() -> None:
    vocabulary = ["_", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0]  # a a _ a b b ' ' _
    scores = np.full((1, len(steps), 4), 0.1, dtype=np.float32)
    for i, token in enumerate(steps):
        scores[0, i, token] = 0.7
    [(text, confidence)] = ctc_greedy(scores, vocabulary, blank=0, max_length=10)
    assert text == "aab "
    assert confidence == pytest.approx(0.7)
    assert ctc_greedy(scores, vocabulary, blank=0, max_length=2)[0][0] == "aa"
    with pytest.raises(OutputShapeError, match="vocabulary has 3"):
        ctc_greedy(scores, vocabulary[:3], blank=0, max_length=10)


def test_nms_keeps_the_best_of_overlapping_boxes_of_a_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]


def test_a_yolo_style_output_becomes_boxes_of_the_original_image_padded_to_max_detections() -> None:
    task = DetectionTask(score_threshold=0.3, iou_threshold=0.5, max_detections=3)
    # [4 + 2 classes, 4 candidates]: cx, cy, w, h, then the class scores
    raw = np.array(
        [
            [
                [20, 21, 40, 40],
                [20, 20, 40, 40],
                [10, 10, 20, 20],
                [4, 4, 20, 20],
                [0.9, 0.8, 0.1, 0.1],
                [0.1, 0.1, 0.2, 0.6],
            ]
        ],
        dtype=np.float32,
    )
    source = SourceModel(file="m.onnx", box_format="cxcywh")
    geometry = Geometry(width=128, height=64, scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=16)
    out = detections([raw], source, task, 2, [geometry], (64, 64))
    assert out["BOX_COUNT"].tolist() == [[2]]
    assert out["BOX_CLASSES"].tolist() == [[0, 1, -1]]
    assert out["BOXES"][0, 0].tolist() == [30.0, 4.0, 50.0, 12.0]  # (15, 18, 25, 22) in the input
    assert out["BOXES"][0, 1].tolist() == [60.0, 28.0, 100.0, 64.0]  # clipped to the image
    assert out["BOX_SCORES"][0].tolist() == pytest.approx([0.9, 0.6, 0.0])


def test_each_task_serves_its_outputs_and_an_output_of_the_wrong_shape_is_refused() -> None:
    empty = np.zeros((2, 0), dtype=np.float32)
    logits = np.array([[0.0, 2.0], [-3.0, 0.0]], dtype=np.float32)
    multilabel = card_of(MultilabelTask(), ["a", "b"]).model_copy(
        update={"source": SourceModel(file="m", scores_are="logits")}
    )
    scores = task_outputs(multilabel, [logits], count=2, embedding=empty)["PROBABILITIES"]
    assert scores[0].tolist() == pytest.approx([0.5, 0.8808], abs=1e-4)  # sigmoid, not softmax
    embedder = card_of(EmbeddingTask(dims=2), [])
    vector = task_outputs(embedder, [np.array([[3.0, 4.0], [0, 2]], np.float32)], count=2, embedding=empty)
    assert vector["VECTOR"].tolist() == [pytest.approx([0.6, 0.8]), [0.0, 1.0]]
    with pytest.raises(OutputShapeError, match="3 values"):
        task_outputs(
            card_of(RegressionTask(), ["x", "y"]), [np.ones((2, 3), np.float32)], count=2, embedding=empty
        )


def _predict(card: ModelCard, outputs: dict[str, Any]) -> PredictionEvent:
    event = new_request(Modality.IMAGE, b"x", content_type="image/png", source="test")
    return task_prediction(
        event, card, Inference("m", "1", outputs), timing=TIMING, k=2, full_probabilities_max_classes=8
    )


def test_the_worker_builds_each_tasks_prediction_and_says_its_task() -> None:
    tags = card_of(MultilabelTask(threshold=0.5, thresholds={"b": 0.9}), ["a", "b", "c"])
    data = _predict(
        tags, {"PROBABILITIES": np.array([0.6, 0.8, 0.95], np.float32), "EMBEDDING": np.zeros(8)}
    ).data
    assert isinstance(data, MultilabelPrediction)
    assert [s.label for s in data.labels] == ["c", "a"]  # b is under its own threshold
    reader = card_of(SequenceTask(), [])
    text = {"TEXT": np.array([b"hello"], dtype=object), "CONFIDENCE": np.array([0.9], np.float32)}
    sequence = _predict(reader, {**text, "EMBEDDING": np.zeros(8)})
    assert isinstance(sequence.data, SequencePrediction)
    assert sequence.data.text == "hello"
    assert PredictionEvent.from_kafka(sequence.to_kafka().value or b"").data == sequence.data
    detector = card_of(DetectionTask(max_detections=2), ["cat", "dog"])
    boxes = {
        "BOXES": np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.float32),
        "BOX_SCORES": np.array([0.8, 0], np.float32),
        "BOX_CLASSES": np.array([1, -1], np.int32),
        "BOX_COUNT": np.array([1], np.int32),
        "EMBEDDING": np.zeros(8),
    }
    found = _predict(detector, boxes).data
    assert isinstance(found, DetectionPrediction)
    assert [(d.label, d.box) for d in found.detections] == [("dog", [1, 2, 3, 4])]
    classified = _predict(
        card_of({"kind": "classification"}, ["x", "y"]),
        {"PROBABILITIES": np.array([0.3, 0.7]), "EMBEDDING": np.zeros(8)},
    )
    assert classified.classification.label == "y"
    assert classified.data.task == "classification"


@pytest.mark.parametrize(
    ("card", "outputs", "problem"),
    [
        (
            card_of(RegressionTask(), ["a", "b"]),
            {"VALUES": np.array([1.0]), "EMBEDDING": np.zeros(8)},
            "1 values",
        ),
        (
            card_of(RegressionTask(), ["a"]),
            {"VALUES": np.array([np.nan]), "EMBEDDING": np.zeros(8)},
            "not finite",
        ),
        (
            card_of(SequenceTask(), []),
            {"TEXT": np.array([b"\xff"], dtype=object), "CONFIDENCE": np.ones(1), "EMBEDDING": np.zeros(8)},
            "not UTF-8",
        ),
        (
            card_of(DetectionTask(max_detections=1), ["a"]),
            {
                "BOXES": np.zeros((1, 4)),
                "BOX_SCORES": np.ones(1),
                "BOX_CLASSES": np.array([5]),
                "BOX_COUNT": np.array([1]),
                "EMBEDDING": np.zeros(8),
            },
            "class 5",
        ),
    ],
)
def test_a_model_output_that_does_not_fit_its_card_is_a_bad_model_output(
    card: ModelCard, outputs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ContractError, match=problem) as caught:
        _predict(card, outputs)
    assert caught.value.reason is DeadLetterReason.BAD_MODEL_OUTPUT


def test_task_options_belong_to_their_task_and_a_sequence_model_needs_its_vocabulary(tmp_path: Path) -> None:
    task, source = parse_task("detection", {"iou_threshold": "none", "box_format": "cxcywh"}, tmp_path)
    assert isinstance(task, DetectionTask)
    assert task.iou_threshold is None
    assert source == {"box_format": "cxcywh"}
    with pytest.raises(
        TaskOptionError, match=r"threshold: a classification model does not take it .*multilabel"
    ):
        parse_task("classification", {"threshold": "0.3"}, tmp_path)
    with pytest.raises(TaskOptionError, match="vocabulary=FILE"):
        parse_task("sequence", {}, tmp_path)
    words = tmp_path / "words.txt"
    words.write_text("_\na\n \n")
    task, _ = parse_task("sequence", {"vocabulary": str(words), "blank": "0"}, tmp_path)
    assert isinstance(task, SequenceTask)
    assert (tmp_path / task.vocabulary).read_text() == "_\na\n \n"
    tags, _ = parse_task("multilabel", {"threshold": "0.4", "threshold.spam": "0.9"}, tmp_path)
    assert isinstance(tags, MultilabelTask)
    assert tags.threshold_of("spam") == 0.9


def test_the_triton_config_declares_each_tasks_outputs() -> None:
    names = [(n, t, d) for n, t, d in output_tensors(card_of(DetectionTask(max_detections=5), ["a"]))]
    assert names[:4] == [
        ("BOXES", "TYPE_FP32", [5, 4]),
        ("BOX_SCORES", "TYPE_FP32", [5]),
        ("BOX_CLASSES", "TYPE_INT32", [5]),
        ("BOX_COUNT", "TYPE_INT32", [1]),
    ]
    assert output_tensors(card_of(SequenceTask(), []))[0] == ("TEXT", "TYPE_STRING", [1])


def test_each_tasks_drift_signals_are_a_category_a_scalar_and_a_vector() -> None:
    from dlstream.domain.contract import Box, RegressionPrediction, ScoredLabel
    from dlstream.domain.drift_signals import categories, signals, summary

    common: dict[str, Any] = {
        "request_id": "r",
        "modality": Modality.IMAGE,
        "model": "m",
        "model_version": "1",
    }
    common |= {"embedding": [0.5], "timing": TIMING}
    text = SequencePrediction(**common, text="ab 12!", confidence=0.8)
    found = signals(text, [])
    assert categories("sequence", [])[found.category or 0] == "4-7 chars"
    assert found.scalar == 0.8
    assert found.vector == pytest.approx([2 / 6, 2 / 6, 1 / 6, 1 / 6, 0.0, 6 / 64, 0.5])
    boxes = DetectionPrediction(
        **common,
        detections=[
            Box(label="dog", score=0.9, box=[0, 0, 99, 9]),
            Box(label="dog", score=0.5, box=[0, 0, 9, 9]),
        ],
    )
    found = signals(boxes, ["cat", "dog"])
    assert (categories("detection", ["cat", "dog"])[found.category or 0], found.scalar) == ("2 objects", 0.7)
    assert found.vector[:2] == [0.0, 1.0]
    tags = MultilabelPrediction(
        **common, labels=[ScoredLabel(label="b", score=0.7)], scores={"a": 0.2, "b": 0.7}
    )
    assert signals(tags, ["a", "b"]).category == 1
    none = MultilabelPrediction(**common, labels=[], scores={"a": 0.2, "b": 0.3})
    assert categories("multilabel", ["a", "b"])[signals(none, ["a", "b"]).category or 0] == "(none present)"
    ages = RegressionPrediction(**common, values={"age": 31.5, "height": 1.7})
    assert signals(ages, ["age", "height"]).scalar == 31.5
    assert summary(ages) == "31.5,1.7"
    assert summary(SequencePrediction(**common, text="a\tb\nc", confidence=0.5)) == "a b c"


def test_each_tasks_prediction_schema_is_published_in_the_docs() -> None:
    import json

    from dlstream.domain.contract import prediction_schemas

    schemas = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for task, schema in prediction_schemas().items():
        written = json.loads((schemas / f"prediction-data.{task}.schema.json").read_text())
        assert written == schema, f"run `make docs`: the schema of {task} predictions changed"


def test_a_label_is_scored_in_its_tasks_metric() -> None:
    from dlstream.domain.feedback import edit_distance, metric, score

    assert edit_distance("kafka", "kafak") == 2
    totals: dict[str, float] = {}
    for truth, said in (("kafka", "kafka"), ("drift", "dirft")):
        for key, value in score("sequence", truth, said).items():
            totals[key] = totals.get(key, 0.0) + value
    name, rate = metric("sequence", totals)
    assert name == "cer"
    assert rate == pytest.approx(0.2)  # 2 errors in 10 characters
    tags = score("multilabel", "spam,ads", "ads,adult")
    assert (tags["tp"], tags["fp"], tags["fn"]) == (1, 1, 1)
    assert metric("multilabel", tags) == ("micro_f1", 0.5)
    assert metric("regression", score("regression", "30,2", "31.5,2")) == ("mae", 0.75)
    assert metric("classification", score("classification", "cat", "dog")) == ("accuracy", 0.0)
    assert metric("regression", {}) == ("mae", None)
