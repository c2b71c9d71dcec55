"""CPU milliseconds per sentence of the text preprocessing's encoder, for calls of 64 fortunes (drawn at
random) split into forward passes of 1, 4, 8, 16 and 64 sentences (one thread, as a Triton stub runs it).

    .venv/bin/python scripts/sentence_batches.py [--sentences 256]

Prints one JSON object: milliseconds per sentence for each pass size, and each one's ratio to the default.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from dlstream.models.preprocess.sentences import CPU_BATCH, encode_sentences, load_sentence_encoder
from dlstream.models.zoo.data.fortunes import load_fortunes

CALL = 64
PASSES = (1, 4, CPU_BATCH, 16, CALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts, _ = load_fortunes()
    texts = random.Random(0).sample(texts, args.sentences)
    encoder = load_sentence_encoder()
    encode_sentences(encoder, texts[:CALL])
    ms: dict[int, float] = {}
    for size in PASSES:
        start = time.process_time()
        for i in range(0, len(texts), CALL):
            encode_sentences(encoder, texts[i : i + CALL], batch_size=size)
        ms[size] = (time.process_time() - start) * 1000 / len(texts)
    sys.stdout.write(
        json.dumps(
            {
                "sentences": len(texts),
                "call": CALL,
                "default_pass": CPU_BATCH,
                "cpu_ms_per_sentence": {str(k): round(v, 1) for k, v in ms.items()},
                "ratio_to_default": {str(k): round(v / ms[CPU_BATCH], 2) for k, v in ms.items()},
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
