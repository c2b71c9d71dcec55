"""``text_topics``: a classifier head on MiniLM sentence embeddings of Debian fortunes (text)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from dlstream.domain.card import TextPreprocessing
from dlstream.domain.contract import Modality
from dlstream.models import ModelSpec, Payloads, Tensors, TrainConfig, Training

# Of every category: 927 held-out fortunes in all, so that the drift monitor's windows of 200 can be measured
# on undrifted traffic apart from the reference and calibration samples a build writes.
TEST_FRACTION = 0.3
# Training entries per category at most (the rest of a category's entries stay unused): the largest files
# (computers 1,025, politics 699 against pets 51) would otherwise dominate the head.
MAX_TRAIN_PER_CATEGORY = 300
PREPROCESSING = TextPreprocessing(encoder="all-MiniLM-L6-v2", max_tokens=128)


def labels() -> list[str]:
    """The fortune categories."""
    from dlstream.models.zoo.data.fortunes import CATEGORIES

    return list(CATEGORIES)


def network(num_classes: int) -> torch.nn.Module:
    """A fresh head on the 384-d sentence embedding."""
    from dlstream.models.zoo.networks.text import TextHead

    return TextHead(num_classes=num_classes)


def _split(seed: int) -> tuple[list[str], npt.NDArray[np.int64], list[int], list[int]]:
    from dlstream.models.zoo.data.fortunes import load_fortunes
    from dlstream.models.zoo.data.split import stratified_split

    texts, label_list = load_fortunes()
    labels_array = np.array(label_list, dtype=np.int64)
    split = stratified_split(labels_array, TEST_FRACTION, seed)
    train = [
        int(i)
        for label in np.unique(labels_array)
        for i in split.train[labels_array[split.train] == label][:MAX_TRAIN_PER_CATEGORY]
    ]
    return texts, labels_array, sorted(train), split.test.tolist()


def training_data(seed: int) -> Tensors:
    """The training entries, embedded by the encoder the declared preprocessing names."""
    from dlstream.models import encode_sentences, load_sentence_encoder

    texts, labels_array, train, _ = _split(seed)
    embedded = encode_sentences(
        load_sentence_encoder(max_tokens=PREPROCESSING.max_tokens), [texts[i] for i in train]
    )
    return torch.from_numpy(embedded), torch.from_numpy(labels_array[train])


def held_out(seed: int) -> Payloads:
    """The held-out 30 % as UTF-8 bytes, with their labels."""
    texts, labels_array, _, test = _split(seed)
    return [texts[i].encode() for i in test], labels_array[test].tolist()


def data_version() -> str:
    """The digest of the fortune files the texts come from."""
    from dlstream.models.zoo.data.fortunes import fortunes_digest

    return fortunes_digest()


SPEC = ModelSpec(
    name="text_topics",
    modality=Modality.TEXT,
    labels=labels,
    preprocessing=PREPROCESSING,
    network=network,
    held_out=held_out,
    training=Training(
        data=training_data,
        epochs=60,
        config=lambda epochs, seed: TrainConfig(
            epochs=epochs, batch_size=64, lr=2e-3, weight_decay=1e-2, seed=seed
        ),
    ),
    default=True,
    description="MiniLM sentence encoder (pretrained) with a trained head over 10 fortune categories.",
    extra_metrics={"evaluation": "held-out fortunes", "encoder": "all-MiniLM-L6-v2"},
    data_version=data_version,
)
