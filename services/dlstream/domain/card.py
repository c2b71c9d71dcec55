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
from typing import Annotated, Any, Literal

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
    """PNG/JPEG bytes to a float tensor: decode, convert, resize (and crop), scale, normalise."""

    kind: Literal["image"] = "image"
    colour: Literal["L", "RGB"] = Field(description="Colour mode the image is converted to.")
    size: int = Field(ge=1, le=4096, description="Side of the square input.")
    resize: Literal["stretch", "shorter-side"] = Field(
        "stretch", description="stretch to size x size, or scale the shorter side to resize_to and crop."
    )
    resize_to: int | None = Field(None, ge=1, description="Shorter side before the centre crop.")
    scale: float = Field(1.0 / 255.0, gt=0, description="Pixels (0..255) are multiplied by this first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Subtracted per channel.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Divided by, per channel.")
    layout: Literal["CHW", "HWC"] = "CHW"

    @property
    def channels(self) -> int:
        """1 for L, 3 for RGB."""
        return 1 if self.colour == "L" else 3

    @property
    def input_shape(self) -> list[int]:
        """The tensor shape of one decoded payload."""
        c, s = self.channels, self.size
        return [c, s, s] if self.layout == "CHW" else [s, s, c]

    @model_validator(mode="after")
    def _per_channel(self) -> ImagePreprocessing:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} has {len(values)} values; {self.colour} needs 1 or {self.channels}")
        if any(v <= 0 for v in self.std):
            raise ValueError("std values must be positive")
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


class Outputs(_Frozen):
    """What the model's output tensors mean."""

    scores: str = Field("PROBABILITIES", description="Name of the per-class output.")
    scores_are: Literal["probabilities", "logits"] = "probabilities"
    embedding: str | None = Field("EMBEDDING", description="Name of the embedding output, or none.")
    embedding_dims: int = Field(8, ge=0, description="Width of the embedding output (0 without one).")


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


class ModelCard(_Frozen):
    """One version of one model."""

    card_version: Literal[1] = 1
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    modality: Modality
    labels: list[str] = Field(min_length=2)
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
