"""Model cards and the Triton answers that carry them, for unit tests of discovery and routing."""

from __future__ import annotations

from typing import Any

from dlstream.domain.card import CARD_PARAMETER, ImagePreprocessing, ModelCard, TextPreprocessing
from dlstream.domain.contract import Modality
from dlstream.models.triton_config import render_config


def card(
    name: str, modality: Modality = Modality.IMAGE, *, labels: int = 3, default: bool = False
) -> ModelCard:
    """A valid card of version 1."""
    preprocessing: Any = (
        TextPreprocessing()
        if modality is Modality.TEXT
        else ImagePreprocessing(colour="L", width=8, height=8)
    )
    if modality is Modality.AUDIO:
        from dlstream.domain.card import AudioPreprocessing

        preprocessing = AudioPreprocessing()
    return ModelCard(
        name=name,
        version=1,
        modality=modality,
        labels=[f"{name}-{i}" for i in range(labels)],
        preprocessing=preprocessing,
        default=default,
    )


def config_of(model: ModelCard, *, outputs: int | None = None) -> dict[str, Any]:
    """The model config Triton returns (as JSON) for a card's generated config."""
    return {
        "name": model.name,
        "output": [
            {"name": "PROBABILITIES", "dims": [str(outputs if outputs is not None else len(model.labels))]},
            {"name": "EMBEDDING", "dims": ["8"]},
        ],
        "parameters": {CARD_PARAMETER: {"string_value": model.model_dump_json()}},
    }


def rendered(model: ModelCard) -> str:
    """The CPU config.pbtxt of a card."""
    return render_config(model, gpu=False)
