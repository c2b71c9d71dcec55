"""Real photos shipped inside the scikit-image wheel, with the ImageNet classes a correct model names."""

from __future__ import annotations

from importlib import resources

import numpy as np
import numpy.typing as npt

# skimage.data names -> acceptable top-1 ImageNet classes.
PHOTOS: dict[str, frozenset[str]] = {
    "chelsea": frozenset({"tabby", "tiger cat", "Egyptian cat"}),
    "coffee": frozenset({"espresso", "cup", "coffee mug"}),
    "rocket": frozenset({"missile", "projectile", "space shuttle"}),
}
# Photos used, with augmentation, for the reference statistics (no labels needed).
REFERENCE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names, in model output order (from torchvision's category list)."""
    text = resources.files("dlstream.models.zoo.data").joinpath("imagenet_labels.txt").read_text()
    return text.splitlines()


def photo(name: str) -> npt.NDArray[np.uint8]:
    """One of scikit-image's bundled photos as an RGB uint8 array."""
    import skimage.data

    image = getattr(skimage.data, name)()
    return np.asarray(image, dtype=np.uint8)
