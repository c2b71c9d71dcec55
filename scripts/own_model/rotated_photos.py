"""Write drifted photos for the walkthrough: grey, rotated crops of three bundled photos, each in a folder
named after its true ImageNet class (``dlstream label --published`` labels them from it).

    python scripts/own_model/rotated_photos.py OUT_DIR [COUNT] [SEED]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CLASSES = {"chelsea": "tabby", "coffee": "espresso", "rocket": "missile"}


def main(out_dir: Path, count: int, seed: int = 1) -> None:
    """Write ``count`` PNGs under ``OUT_DIR/<class>/``."""
    from dlstream.models.preprocess.image import encode_png
    from dlstream.models.zoo.data.photos import photo

    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    for i in range(count):
        name = names[i % len(names)]
        image = photo(name)
        height, width = image.shape[:2]
        side = int(min(height, width) * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = image[top : top + side, left : left + side].mean(axis=2).astype(np.uint8)
        turned = np.rot90(crop, k=int(rng.integers(1, 4))).copy()
        folder = out_dir / CLASSES[name]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(encode_png(turned))
    sys.stdout.write(f"wrote {count} photos under {out_dir}\n")


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "drifted"), int(sys.argv[2]) if len(sys.argv) > 2 else 600
    )
