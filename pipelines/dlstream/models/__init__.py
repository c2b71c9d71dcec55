"""The model SDK: what a model plugin imports.

A plugin is a module that exposes a :class:`ModelSpec` and is registered in the ``dlstream.models``
entry-point group; ``dlstream models build`` trains (or loads) it, exports it into the Triton repository and
serves it. A plugin imports only this package's names below and the domain's types
(:mod:`dlstream.domain.card` for the preprocessing it declares, :mod:`dlstream.domain.contract` for its
modality); everything else under ``dlstream.models`` is the SDK's own and may change.

The names are loaded on first use, so importing a submodule (Triton's model files import
:mod:`dlstream.models.serving`) does not import torch through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlstream.models.preprocess.declared import audio_tensor, preprocessor
    from dlstream.models.preprocess.image import encode_png
    from dlstream.models.preprocess.sentences import encode_sentences, load_sentence_encoder
    from dlstream.models.spec import ModelSpec, Payloads, Tensors, Training
    from dlstream.models.train import Augment, TrainConfig

# Public name -> the module that defines it.
_EXPORTS = {
    "ModelSpec": "dlstream.models.spec",
    "Payloads": "dlstream.models.spec",
    "Tensors": "dlstream.models.spec",
    "Training": "dlstream.models.spec",
    "TrainConfig": "dlstream.models.train",
    "Augment": "dlstream.models.train",
    "audio_tensor": "dlstream.models.preprocess.declared",
    "preprocessor": "dlstream.models.preprocess.declared",
    "encode_png": "dlstream.models.preprocess.image",
    "encode_sentences": "dlstream.models.preprocess.sentences",
    "load_sentence_encoder": "dlstream.models.preprocess.sentences",
}

__all__ = [
    "Augment",
    "ModelSpec",
    "Payloads",
    "Tensors",
    "TrainConfig",
    "Training",
    "audio_tensor",
    "encode_png",
    "encode_sentences",
    "load_sentence_encoder",
    "preprocessor",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlstream.models' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
