"""A model file's raw outputs turned into the outputs Triton serves for its task (the names of
:class:`dlstream.domain.card.Outputs`): pure numpy, run inside Triton, by ``models add`` and by evaluation.

- classification: softmax probabilities; multilabel: sigmoid scores; regression: the values;
- embedding: the vector, L2-normalised when the card says so;
- sequence: CTC greedy decoding of per-step scores to text and the mean confidence of the kept steps;
- detection: boxes of any declared format to xyxy pixels of the original image, low scores dropped,
  non-maximum suppression per class when the model does not do it, padded to ``max_detections`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dlstream.adapters.triton.client import sigmoid, softmax
from dlstream.domain.card import (
    BoxFormat,
    DetectionTask,
    EmbeddingTask,
    ModelCard,
    MultilabelTask,
    RegressionTask,
    SequenceTask,
    SourceModel,
)
from dlstream.domain.errors import DeadLetterReason
from dlstream.models.preprocess.declared import Geometry

Array = npt.NDArray[np.float32]
Named = dict[str, npt.NDArray[Any]]


# How a Triton error says the model's output, not the payload, is at fault (the worker dead-letters it so).
BAD_OUTPUT_PREFIX = f"{DeadLetterReason.BAD_MODEL_OUTPUT.value}: "


class OutputShapeError(ValueError):
    """A model's output does not have the shape its card declares."""


def read_vocabulary(path: Path) -> list[str]:
    """One token per line, in output order; a line is taken as it is (a space is a token)."""
    text = path.read_text(encoding="utf-8")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def ctc_greedy(
    step_scores: Array, vocabulary: Sequence[str], blank: int, max_length: int
) -> list[tuple[str, float]]:
    """``[batch, steps, tokens]`` probabilities to ``(text, mean confidence of the kept steps)`` per item:
    the best token per step, repeats merged, blanks dropped."""
    if step_scores.ndim != 3:
        raise OutputShapeError(
            f"per-step scores have shape {list(step_scores.shape)}, not [batch, steps, tokens]"
        )
    if step_scores.shape[2] != len(vocabulary):
        raise OutputShapeError(
            f"per-step scores have {step_scores.shape[2]} tokens; the vocabulary has {len(vocabulary)}"
        )
    best = step_scores.argmax(axis=2)
    confidence = step_scores.max(axis=2)
    decoded = []
    for tokens, scores in zip(best, confidence, strict=True):
        keep = tokens != blank
        keep[1:] &= tokens[1:] != tokens[:-1]
        kept = np.flatnonzero(keep)[:max_length]
        text = "".join(vocabulary[int(t)] for t in tokens[kept])
        decoded.append((text, float(scores[kept].mean()) if len(kept) else 0.0))
    return decoded


def to_xyxy(boxes: Array, box_format: BoxFormat) -> Array:
    """``[n, 4]`` boxes of a format as x_min, y_min, x_max, y_max."""
    if box_format == "xyxy":
        return np.asarray(boxes, dtype=np.float32)
    if box_format == "xywh":
        x, y, w, h = boxes.T
        return np.asarray(np.stack([x, y, x + w, y + h], axis=1), dtype=np.float32)
    cx, cy, w, h = boxes.T
    return np.asarray(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), dtype=np.float32)


def iou(box: Array, others: Array) -> Array:
    """Intersection over union of one xyxy box with each of ``others``."""
    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[2], others[:, 2])
    bottom = np.minimum(box[3], others[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9), dtype=np.float32)


def nms(
    boxes: Array, scores: Array, classes: npt.NDArray[np.int64], threshold: float
) -> npt.NDArray[np.int64]:
    """Indices kept by greedy non-maximum suppression within each class, best score first."""
    kept: list[int] = []
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        order = members[np.argsort(-scores[members], kind="stable")]
        while len(order):
            first, rest = order[0], order[1:]
            kept.append(int(first))
            order = rest[iou(boxes[first], boxes[rest]) <= threshold]
    return np.asarray(sorted(kept, key=lambda i: -scores[i]), dtype=np.int64)


def _candidates(
    outputs: Sequence[Array], source: SourceModel, item: int, classes: int
) -> tuple[Array, Array, npt.NDArray[np.int64]]:
    """One item's boxes (as the model writes them), scores and classes, before thresholds."""
    if source.boxes is None:  # YOLO-style: [4 + classes, N] (or [N, 4 + classes])
        raw = outputs[source.scores][item]
        if raw.ndim != 2 or 4 + classes not in raw.shape:
            raise OutputShapeError(
                f"output {source.scores} has shape {list(raw.shape)} per image; a YOLO-style output is "
                f"[{4 + classes}, boxes] for {classes} classes"
            )
        rows = raw.T if raw.shape[0] == 4 + classes and raw.shape[1] != 4 + classes else raw
        class_scores = rows[:, 4:]
        best = class_scores.argmax(axis=1)
        return rows[:, :4], class_scores[np.arange(len(rows)), best], best.astype(np.int64)
    boxes = outputs[source.boxes][item].reshape(-1, 4)
    scores = outputs[source.scores][item]
    if source.box_classes is not None:
        chosen = outputs[source.box_classes][item].reshape(-1).astype(np.int64)
        return boxes, scores.reshape(-1), chosen
    scores = scores.reshape(len(boxes), -1) if scores.size != len(boxes) else scores.reshape(-1, 1)
    if scores.shape[1] == 1 and classes > 1:
        raise OutputShapeError(f"one score per box for {classes} classes and no class output")
    best = scores.argmax(axis=1)
    return boxes, scores[np.arange(len(boxes)), best], best.astype(np.int64)


def detections(
    outputs: Sequence[Array],
    source: SourceModel,
    task: DetectionTask,
    classes: int,
    geometries: Sequence[Geometry],
    input_size: tuple[int, int],
) -> Named:
    """``BOXES [n, max, 4]`` (xyxy, original pixels), ``BOX_SCORES``, ``BOX_CLASSES`` (padded with -1) and
    ``BOX_COUNT [n, 1]`` for a batch of images; ``input_size`` is the model input's (width, height)."""
    count = len(geometries)
    limit = task.max_detections
    out_boxes = np.zeros((count, limit, 4), dtype=np.float32)
    out_scores = np.zeros((count, limit), dtype=np.float32)
    out_classes = np.full((count, limit), -1, dtype=np.int32)
    out_count = np.zeros((count, 1), dtype=np.int32)
    for item, geometry in enumerate(geometries):
        boxes, scores, chosen = _candidates(outputs, source, item, classes)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= classes):
            raise OutputShapeError(f"a class index outside 0..{classes - 1}")
        keep = scores >= task.score_threshold
        boxes, scores, chosen = to_xyxy(boxes[keep], source.box_format), scores[keep], chosen[keep]
        if source.boxes_normalised:
            boxes = boxes * np.asarray([input_size[0], input_size[1]] * 2, dtype=np.float32)
        groups = np.zeros_like(chosen) if task.class_agnostic else chosen
        order = (
            nms(boxes, scores, groups, task.iou_threshold)
            if task.iou_threshold is not None
            else np.argsort(-scores, kind="stable")
        )[:limit]
        found = len(order)
        out_boxes[item, :found] = geometry.to_original(boxes[order])
        out_scores[item, :found] = np.clip(scores[order], 0.0, 1.0)
        out_classes[item, :found] = chosen[order]
        out_count[item, 0] = found
    return {"BOXES": out_boxes, "BOX_SCORES": out_scores, "BOX_CLASSES": out_classes, "BOX_COUNT": out_count}


def _rows(array: Array, count: int) -> Array:
    return array.reshape(count, -1).astype(np.float32)


def task_outputs(
    card: ModelCard,
    outputs: Sequence[Array],
    *,
    count: int,
    embedding: Array,
    vocabulary: Sequence[str] | None = None,
    geometries: Sequence[Geometry] = (),
) -> Named:
    """The Triton outputs of ``card``'s task for a batch of ``count`` items, from the model file's raw
    ``outputs`` (as ordered in the file) and the compact drift ``embedding`` ([count, dims], possibly 0
    wide)."""
    source = card.source
    if source is None:
        raise ValueError(f"{card.name} has no model file")
    task, names = card.task, card.outputs
    named: Named = {}
    main = outputs[source.scores]
    if isinstance(task, SequenceTask):
        if vocabulary is None:
            raise ValueError("a sequence model needs its vocabulary")
        scores = main if source.scores_are == "probabilities" else softmax(main)
        decoded = ctc_greedy(scores.astype(np.float32), vocabulary, task.blank, task.max_length)
        named[names.text] = np.asarray([[text.encode()] for text, _ in decoded], dtype=object)
        named[names.confidence] = np.asarray([[conf] for _, conf in decoded], dtype=np.float32)
    elif isinstance(task, DetectionTask):
        if card.preprocessing is None or card.preprocessing.kind != "image":
            raise ValueError("a detector takes images")
        spec = card.preprocessing
        size = (spec.width or 0, spec.height)
        renamed = detections(outputs, source, task, len(card.labels), geometries, size)
        named[names.boxes] = renamed["BOXES"]
        named[names.box_scores] = renamed["BOX_SCORES"]
        named[names.box_classes] = renamed["BOX_CLASSES"]
        named[names.box_count] = renamed["BOX_COUNT"]
    else:
        values = _rows(main, count)
        if isinstance(task, EmbeddingTask):
            if values.shape[1] != task.dims:
                raise OutputShapeError(f"the vector has {values.shape[1]} values; the card says {task.dims}")
            if task.normalise:
                values = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
            named[names.vector] = values.astype(np.float32)
        elif isinstance(task, RegressionTask):
            if values.shape[1] != len(card.labels):
                raise OutputShapeError(f"{values.shape[1]} values for {len(card.labels)} names")
            named[names.values] = values
        else:
            if values.shape[1] != len(card.labels):
                raise OutputShapeError(f"{values.shape[1]} scores for {len(card.labels)} labels")
            if source.scores_are == "logits":
                values = sigmoid(values) if isinstance(task, MultilabelTask) else softmax(values)
            named[names.scores] = values
    if names.embedding:
        named[names.embedding] = embedding.astype(np.float32)
    return named
