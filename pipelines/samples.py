"""Held-out samples of each model as the raw bytes a producer sends, for tests, benchmarks and demos."""

from __future__ import annotations

import numpy as np

PHOTO_VIEWS = 61


def held_out_payloads(model: str, seed: int) -> tuple[list[bytes], list[int] | None]:
    """The held-out samples of a build with ``seed``, and their label indices when known."""
    if model == "digits":
        from pipelines.data.mnist import load_mnist
        from pipelines.data.split import stratified_split
        from pipelines.preprocess.image import encode_png

        data = load_mnist()
        split = stratified_split(data.labels, 0.2, seed)
        return [encode_png(image) for image in data.images[split.test]], data.labels[split.test].tolist()
    if model == "speech_digits":
        from pipelines.data.spoken_digits import make_spoken_digits

        clips = make_spoken_digits(seed, test_only=True).test
        return [clip.wav for clip in clips], [clip.label for clip in clips]
    if model == "text_topics":
        from pipelines.data.fortunes import load_fortunes
        from pipelines.data.split import stratified_split

        texts, labels = load_fortunes()
        split = stratified_split(np.array(labels), 0.2, seed)
        return [texts[i].encode() for i in split.test], [labels[i] for i in split.test]
    if model == "imagenet":
        from pipelines.builders.imagenet import reference_views
        from pipelines.data.photos import PHOTOS, photo
        from pipelines.preprocess.image import encode_png

        return [encode_png(photo(name)) for name in PHOTOS] + reference_views(seed)[:PHOTO_VIEWS], None
    raise KeyError(f"no samples for model {model!r}")
