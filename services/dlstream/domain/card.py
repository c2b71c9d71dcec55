"""The model card: what one version of a model is, written beside its weights and carried through Triton.

Every build, add and retrain writes ``model_repo/<name>/<version>/card.json``; the generated ``config.pbtxt``
carries the serving version's card in its ``parameters`` (:data:`CARD_PARAMETER`), which is how workers learn
a model's modality, labels and outputs from Triton alone. Pure schema: no I/O besides :func:`read_card`.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlstream.domain.contract import Modality
from dlstream.domain.errors import DlstreamError

CARD_FILE = "card.json"
CARD_PARAMETER = "dlstream.card"
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class CardError(DlstreamError):
    """A model card is missing or does not validate; the message says what is wrong and where."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImagePreprocessing(_Frozen):
    """PNG/JPEG bytes to a tensor: decode, convert, resize (stretch, crop, letterbox or to a fixed height),
    then scale and normalise (float32) or keep the pixels (uint8).

    ``size`` is accepted on input as a side (``28``) or as ``WIDTHxHEIGHT`` (``192x48``) and sets ``width``
    and ``height``. With ``resize="fixed-height"`` and no ``width``, lines keep their aspect ratio and a
    batch is padded on the right to its widest (at least ``min_width``, at most ``max_width``).
    """

    kind: Literal["image"] = "image"
    colour: Literal["L", "RGB", "BGR"] = Field(description="Colour mode and channel order of the input.")
    width: int | None = Field(
        None, ge=1, le=8192, description="Input width (None: dynamic, with resize fixed-height)."
    )
    height: int = Field(ge=1, le=8192, description="Input height.")
    resize: Literal["stretch", "shorter-side", "letterbox", "fixed-height"] = Field(
        "stretch",
        description="stretch to width x height; scale the shorter side to resize_to and centre-crop; "
        "letterbox (keep the aspect ratio, pad with pad_value); or scale to the height, keeping the aspect "
        "ratio, and pad on the right.",
    )
    resize_to: int | None = Field(None, ge=1, description="Shorter side before the centre crop.")
    pad_value: float = Field(0.0, ge=0, le=255, description="Pixel value (0..255) of the padding.")
    pad_align: Literal["centre", "top-left"] = Field(
        "centre", description="Where a letterboxed image sits in its input."
    )
    min_width: int | None = Field(
        None, ge=1, description="Dynamic width: a batch is padded to at least this."
    )
    max_width: int = Field(
        1280, ge=1, le=8192, description="Dynamic width: wider lines are squeezed to this."
    )
    dtype: Literal["float32", "uint8"] = Field(
        "float32", description="float32 (scaled and normalised) or uint8 (the pixels as they are)."
    )
    scale: float = Field(1.0 / 255.0, gt=0, description="Pixels (0..255) are multiplied by this first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Subtracted per channel.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Divided by, per channel.")
    layout: Literal["CHW", "HWC"] = "CHW"

    @model_validator(mode="before")
    @classmethod
    def _size(cls, values: Any) -> Any:
        if not isinstance(values, dict) or "size" not in values:
            return values
        values = dict(values)
        size = values.pop("size")
        if isinstance(size, str) and "x" in size.lower():
            width, _, height = size.lower().partition("x")
            if not (width.strip().isdigit() and height.strip().isdigit()):
                raise ValueError(f"size {size!r}: give one side (28) or WIDTHxHEIGHT (192x48)")
            values.setdefault("width", int(width))
            values.setdefault("height", int(height))
        else:
            values.setdefault("width", size)
            values.setdefault("height", size)
        return values

    @property
    def channels(self) -> int:
        """1 for L, 3 for RGB and BGR."""
        return 1 if self.colour == "L" else 3

    @property
    def dynamic_width(self) -> bool:
        """Whether the width of the input follows each batch's widest line."""
        return self.width is None

    @property
    def input_shape(self) -> list[int]:
        """The tensor shape of one decoded payload (-1: the dynamic width)."""
        c, h, w = self.channels, self.height, self.width if self.width is not None else -1
        return [c, h, w] if self.layout == "CHW" else [h, w, c]

    @model_validator(mode="after")
    def _per_channel(self) -> ImagePreprocessing:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} has {len(values)} values; {self.colour} needs 1 or {self.channels}")
        if any(v <= 0 for v in self.std):
            raise ValueError("std values must be positive")
        if self.width is None and self.resize != "fixed-height":
            raise ValueError(
                f"resize {self.resize} needs a width (size=WIDTHxHEIGHT); only fixed-height "
                "takes a dynamic width"
            )
        if self.resize == "shorter-side" and self.width != self.height:
            raise ValueError("resize shorter-side centre-crops a square: give one size")
        if self.min_width is not None and self.min_width > self.max_width:
            raise ValueError(f"min_width {self.min_width} is above max_width {self.max_width}")
        return self


class AudioPreprocessing(_Frozen):
    """WAV bytes to mono audio at ``sample_rate`` in a window of ``duration_s`` (centred on the sound, or from
    the start; padded with silence or cropped), as a log-mel spectrogram or the raw waveform."""

    kind: Literal["audio"] = "audio"
    sample_rate: int = Field(16_000, ge=1000, le=192_000)
    duration_s: float = Field(1.0, gt=0, le=30)
    align: Literal["centre", "start"] = Field("centre", description="Centre the sound, or keep the start.")
    features: Literal["log-mel", "waveform"] = "log-mel"
    n_fft: int = Field(400, ge=16)
    hop: int = Field(160, ge=1)
    n_mels: int = Field(64, ge=1)

    @property
    def samples(self) -> int:
        """Samples in the window."""
        return round(self.sample_rate * self.duration_s)

    @property
    def input_shape(self) -> list[int]:
        """``[1, n_mels, frames]`` (log-mel) or ``[samples]`` (waveform) of one decoded payload."""
        if self.features == "waveform":
            return [self.samples]
        return [1, self.n_mels, self.samples // self.hop + 1]


class TextPreprocessing(_Frozen):
    """UTF-8 bytes to a sentence embedding by a packaged encoder; the model is the head on top."""

    kind: Literal["text"] = "text"
    encoder: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"
    max_tokens: int = Field(128, ge=1, le=4096)

    @property
    def input_shape(self) -> list[int]:
        """``[384]``: the encoder's embedding."""
        return [384]


TokenTensor = Literal["input_ids", "attention_mask", "token_type_ids"]


class TokensPreprocessing(_Frozen):
    """UTF-8 bytes to token ids by a tokenizer file (Hugging Face ``tokenizer.json``) kept with the version,
    padded or truncated to ``max_length``; the model takes the named tensors, in this order."""

    kind: Literal["tokens"] = "tokens"
    tokenizer: str = Field("tokenizer.json", description="The tokenizer file in the version folder.")
    max_length: int = Field(128, ge=1, le=8192)
    inputs: list[TokenTensor] = Field(
        default_factory=lambda: list[TokenTensor](["input_ids", "attention_mask"]), min_length=1
    )

    @property
    def input_shape(self) -> list[int]:
        """``[max_length]`` per tensor."""
        return [self.max_length]


Preprocessing = Annotated[
    ImagePreprocessing | AudioPreprocessing | TextPreprocessing | TokensPreprocessing,
    Field(discriminator="kind"),
]


def a_task(kind: str) -> str:
    """``kind`` with its article, for messages: "a detection", "an embedding"."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


class ClassificationTask(_Frozen):
    """One class per event: the labels' scores sum to one (softmax)."""

    kind: Literal["classification"] = "classification"


class MultilabelTask(_Frozen):
    """Any number of classes per event: an independent score per label (sigmoid), a label is present when
    its score reaches its threshold."""

    kind: Literal["multilabel"] = "multilabel"
    threshold: float = Field(0.5, gt=0, lt=1, description="The threshold of every label not in thresholds.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Thresholds of single labels.")

    def threshold_of(self, label: str) -> float:
        """The threshold a label's score must reach."""
        return self.thresholds.get(label, self.threshold)


BoxFormat = Literal["xyxy", "xywh", "cxcywh"]


class DetectionTask(_Frozen):
    """Boxes with a class and a score each, in the original image's pixels (``xyxy``)."""

    kind: Literal["detection"] = "detection"
    score_threshold: float = Field(0.25, ge=0, lt=1, description="Detections scoring less are dropped.")
    iou_threshold: float | None = Field(
        0.45,
        gt=0,
        le=1,
        description="Non-maximum suppression at this IoU, per class unless class_agnostic (None: the model "
        "suppresses itself).",
    )
    max_detections: int = Field(100, ge=1, le=10_000, description="The most detections kept per event.")
    class_agnostic: bool = Field(
        False, description="Suppress overlapping boxes across classes, not per class."
    )


class EmbeddingTask(_Frozen):
    """A vector per event (for a search index, deduplication, ...)."""

    kind: Literal["embedding"] = "embedding"
    dims: int = Field(ge=1, le=65_536, description="Width of the vector.")
    normalise: bool = Field(True, description="Scale each vector to unit L2 norm.")


class RegressionTask(_Frozen):
    """One or more named values per event (the card's labels name them, in output order)."""

    kind: Literal["regression"] = "regression"


class SequenceTask(_Frozen):
    """Per-step scores decoded to text: CTC greedy decoding (best token per step, repeats merged, blanks
    dropped) with the vocabulary file kept with the version (one token per line, in output order)."""

    kind: Literal["sequence"] = "sequence"
    vocabulary: str = Field("vocabulary.txt", description="The vocabulary file in the version folder.")
    blank: int = Field(0, ge=0, description="Index of the CTC blank token.")
    max_length: int = Field(256, ge=1, le=65_536, description="Longest text kept, in tokens.")


Task = Annotated[
    ClassificationTask | MultilabelTask | DetectionTask | EmbeddingTask | RegressionTask | SequenceTask,
    Field(discriminator="kind"),
]
TaskName = Literal["classification", "multilabel", "detection", "embedding", "regression", "sequence"]
TASKS: tuple[TaskName, ...] = get_args(TaskName)
# What a task's labels are, and the fewest it takes.
LABELS_MEAN: dict[str, tuple[str, int]] = {
    "classification": ("classes", 2),
    "multilabel": ("classes", 1),
    "detection": ("classes", 1),
    "regression": ("value names", 1),
    "embedding": ("nothing", 0),
    "sequence": ("nothing (the vocabulary file holds the tokens)", 0),
}


class Outputs(_Frozen):
    """The Triton output tensors a worker reads, by task (every dlstream runner emits these names; a Triton
    model of its owner names its own): per-class scores (classification, multilabel), values (regression),
    a vector (embedding), text and its confidence (sequence), boxes, their scores and classes and how many
    are real (detection), and, for any task, the compact embedding the drift monitor tests."""

    scores: str = Field("PROBABILITIES", description="Name of the per-class output.")
    scores_are: Literal["probabilities", "logits"] = "probabilities"
    embedding: str | None = Field("EMBEDDING", description="Name of the embedding output, or none.")
    embedding_dims: int = Field(8, ge=0, description="Width of the embedding output (0 without one).")
    values: str = Field("VALUES", description="Regression: the values, in label order.")
    vector: str = Field("VECTOR", description="Embedding: the vector.")
    text: str = Field("TEXT", description="Sequence: the decoded text (UTF-8 bytes).")
    confidence: str = Field("CONFIDENCE", description="Sequence: the mean confidence of the kept steps.")
    boxes: str = Field("BOXES", description="Detection: [max_detections, 4] xyxy boxes in image pixels.")
    box_scores: str = Field("BOX_SCORES", description="Detection: [max_detections] scores.")
    box_classes: str = Field("BOX_CLASSES", description="Detection: [max_detections] class indices.")
    box_count: str = Field("BOX_COUNT", description="Detection: [1] how many rows are detections.")


class Retraining(_Frozen):
    """How a version can be trained again: a plugin's recipe, its owner's command, or not at all."""

    kind: Literal["recipe", "command", "none"] = "none"
    recipe: str | None = Field(None, description="The dlstream.models plugin whose recipe retrains it.")
    command: list[str] | None = Field(None, description="The training command (argv) of an added model.")

    @model_validator(mode="after")
    def _named(self) -> Retraining:
        if self.kind == "recipe" and not self.recipe:
            raise ValueError("retraining of kind 'recipe' must name the recipe")
        if self.kind == "command" and not self.command:
            raise ValueError("retraining of kind 'command' must give the command")
        return self


class SourceModel(_Frozen):
    """The model file of an added version and what its outputs mean (the runner turns them into the
    ``Outputs`` Triton serves: probabilities and, when there is one, the projected embedding)."""

    file: str = Field(description="The model file in the version folder.")
    inputs: list[str] = Field(default_factory=list, description="Input names (ONNX), in feeding order.")
    scores: int = Field(0, ge=0, description="Index of the per-class output.")
    scores_are: Literal["probabilities", "logits"] = "logits"
    embedding: int | None = Field(None, ge=0, description="Index of the embedding output, if any.")
    projection: str | None = Field(None, description="File of the embedding projection (mean, components).")
    boxes: int | None = Field(
        None,
        ge=0,
        description="Detection: index of the boxes output ([N, 4]; None: output 0 is YOLO-style "
        "[4 + classes, N], boxes then class scores).",
    )
    box_format: BoxFormat = Field("xyxy", description="Detection: how the model's boxes are written.")
    boxes_normalised: bool = Field(False, description="Detection: boxes in 0..1 of the input, not pixels.")
    box_classes: int | None = Field(
        None, ge=0, description="Detection: index of a class-index output (the scores are then one per box)."
    )


class ModelCard(_Frozen):
    """One version of one model."""

    card_version: Literal[1] = 1
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    modality: Modality
    task: Task = Field(default_factory=ClassificationTask, description="What the model predicts.")
    labels: list[str] = Field(
        default_factory=list,
        description="Classes (classification, multilabel, detection) or value names "
        "(regression), in output order; none for embedding and sequence models.",
    )
    outputs: Outputs = Outputs()
    preprocessing: Preprocessing | None = Field(
        description="How payloads become model inputs (None: the Triton model decodes them itself)."
    )
    source_format: Literal["torchscript", "onnx", "triton"] = "torchscript"
    payload_input: str = Field("PAYLOAD", description="The Triton input that takes the payload bytes.")
    source: SourceModel | None = Field(
        None, description="The added model file and its outputs (None: a plugin's serving module)."
    )
    plugin: str | None = Field(None, description="The dlstream.models plugin that built this version.")
    default: bool = Field(False, description="The model an event of this modality gets when it names none.")
    max_batch_size: int = Field(64, ge=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
    retraining: Retraining = Retraining()
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        repeated = sorted(label for label, count in Counter(labels).items() if count > 1)
        if repeated:
            raise ValueError(f"labels repeat: {', '.join(repeated[:5])}")
        if any(not label.strip() for label in labels):
            raise ValueError("a label is empty")
        return labels

    @model_validator(mode="after")
    def _labels_of_task(self) -> ModelCard:
        meaning, fewest = LABELS_MEAN[self.task.kind]
        if len(self.labels) < fewest:
            raise ValueError(f"{a_task(self.task.kind)} model needs at least {fewest} labels ({meaning})")
        if fewest == 0 and self.labels:
            raise ValueError(f"{a_task(self.task.kind)} model has no labels")
        if isinstance(self.task, MultilabelTask):
            unknown = sorted(set(self.task.thresholds) - set(self.labels))
            if unknown:
                raise ValueError(f"thresholds of unknown labels: {', '.join(unknown[:5])}")
        return self

    def output_names(self) -> list[str]:
        """The Triton outputs a worker reads for this model's task, the drift embedding last (when any)."""
        names, kind = self.outputs, self.task.kind
        by_task = {
            "classification": [names.scores],
            "multilabel": [names.scores],
            "regression": [names.values],
            "embedding": [names.vector],
            "sequence": [names.text, names.confidence],
            "detection": [names.boxes, names.box_scores, names.box_classes, names.box_count],
        }
        return by_task[kind] + ([names.embedding] if names.embedding else [])

    @property
    def accuracy(self) -> float | None:
        """Held-out accuracy the build measured, when it did."""
        value = self.metrics.get("accuracy")
        return float(value) if isinstance(value, int | float) else None

    def to_json(self) -> str:
        """The card as written to ``card.json``."""
        return self.model_dump_json(indent=2)


def _explain(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:8]:
        where = ".".join(str(part) for part in item["loc"]) or "card"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def parse_card(text: str | bytes, *, source: str) -> ModelCard:
    """Validate a card's JSON.

    Raises:
        CardError: naming ``source`` and each field that is wrong.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{source}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CardError(f"{source}: a model card is a JSON object")
    try:
        return ModelCard.model_validate(document)
    except ValidationError as exc:
        raise CardError(f"{source}: {_explain(exc)}") from None


def read_card(version_dir: Path) -> ModelCard:
    """The card of a version folder.

    Raises:
        CardError: the file is missing or invalid.
    """
    path = version_dir / CARD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CardError(f"{path}: no model card (build, add or retrain writes one)") from None
    return parse_card(text, source=str(path))
