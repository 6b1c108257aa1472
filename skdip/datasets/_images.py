"""Test pictures bundled with scikit-image, loaded in skdip's image convention."""

from __future__ import annotations

import numpy as np

from .._typing import Int
from .._validation import check_int_pair

__all__ = ["IMAGE_NAMES", "load_image"]

# Single pictures shipped inside the scikit-image wheel (no download needed).
IMAGE_NAMES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "checkerboard",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
)


def _center_crop_to_aspect(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Crop the centre of ``image`` so that its height/width ratio is ``h / w``."""
    rows, cols = image.shape[:2]
    # Compare rows / cols with h / w without dividing.
    if rows * w > cols * h:  # too tall: crop rows
        new_rows = max(1, min(rows, round(cols * h / w)))
        top = (rows - new_rows) // 2
        return image[top : top + new_rows]
    if rows * w < cols * h:  # too wide: crop columns
        new_cols = max(1, min(cols, round(rows * w / h)))
        left = (cols - new_cols) // 2
        return image[:, left : left + new_cols]
    return image


def load_image(
    name: str,
    size: Int | tuple[int, int] | None = None,
    as_gray: bool = False,
) -> np.ndarray:
    """Load one of the test pictures bundled with scikit-image.

    The picture is returned as a new ``float64`` array with values in
    ``[0, 1]``, of shape ``(H, W)`` for grey pictures and ``(H, W, 3)`` for
    colour ones (an alpha channel, as in ``"logo"``, is dropped). Nothing is
    downloaded: only the pictures in :data:`IMAGE_NAMES` are available.

    Parameters
    ----------
    name : str
        Name of the picture, one of :data:`IMAGE_NAMES` (for example
        ``"camera"``, ``"astronaut"``, ``"shepp_logan_phantom"``).
    size : int or tuple of two ints, default=None
        Target spatial size. An int ``s`` means ``(s, s)``; a pair means
        ``(h, w)``. The picture is first cropped about its centre to the
        aspect ratio ``h / w`` and then resized to exactly ``(h, w)`` with
        :func:`skimage.transform.resize` (bilinear, with anti-aliasing when
        shrinking). ``None`` keeps the original size.
    as_gray : bool, default=False
        Convert colour pictures to grey with :func:`skimage.color.rgb2gray`
        (ITU-R BT.709 luma weights). Grey pictures are unchanged.

    Returns
    -------
    image : ndarray of float64, shape (H, W) or (H, W, 3)
        The picture, values in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``name`` is not a bundled picture or ``size`` is not positive.
    TypeError
        If ``name`` is not a string, ``size`` is not an int or pair of ints, or
        ``as_gray`` is not a bool.

    Examples
    --------
    >>> from skdip.datasets import load_image
    >>> img = load_image("astronaut", size=(32, 48))
    >>> img.shape, img.dtype
    ((32, 48, 3), dtype('float64'))
    >>> grey = load_image("astronaut", size=32, as_gray=True)
    >>> grey.shape, bool(grey.min() >= 0 and grey.max() <= 1)
    ((32, 32), True)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in IMAGE_NAMES:
        raise ValueError(
            f"unknown image {name!r}; the pictures bundled with scikit-image are "
            f"{', '.join(IMAGE_NAMES)}"
        )
    target = check_int_pair(size, "size", allow_int=True, allow_none=True)
    if not isinstance(as_gray, (bool, np.bool_)):
        # A truthy string ("no", "False") would have turned a colour picture grey.
        raise TypeError(f"as_gray must be a bool, got {as_gray!r}")

    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize
    from skimage.util import img_as_float

    raw = getattr(skimage.data, name)()
    if raw.ndim == 3 and raw.shape[-1] == 4:  # RGBA: drop alpha
        raw = raw[..., :3]
    image = np.array(img_as_float(raw), dtype=np.float64, copy=True)
    if as_gray and image.ndim == 3:
        image = rgb2gray(image)

    if target is not None:
        h, w = target
        image = _center_crop_to_aspect(image, h, w)
        if image.shape[:2] != (h, w):
            image = resize(
                image,
                (h, w) + image.shape[2:],
                order=1,
                mode="reflect",
                anti_aliasing=bool(image.shape[0] > h or image.shape[1] > w),
            )
    image = np.clip(image, 0.0, 1.0)
    return np.ascontiguousarray(image, dtype=np.float64)
