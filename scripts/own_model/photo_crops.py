"""Write reference photos for the walkthrough: crops and flips of the photos bundled with scikit-image.

python scripts/own_model/photo_crops.py OUT_DIR [COUNT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out_dir: Path, count: int) -> None:
    """Write ``count`` PNG crops."""
    from dlstream.models.preprocess.image import encode_png
    from dlstream.models.zoo.data.photos import REFERENCE_PHOTOS, photo

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = photo(REFERENCE_PHOTOS[i % len(REFERENCE_PHOTOS)])
        height, width = image.shape[:2]
        side = int(min(height, width) * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = image[top : top + side, left : left + side]
        flipped = crop[:, ::-1].copy() if rng.random() < 0.5 else crop
        (out_dir / f"{i:03d}.png").write_bytes(encode_png(flipped))
    sys.stdout.write(f"wrote {count} photos to {out_dir}\n")


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "reference"), count)
