"""Inpainting with DIPInpainter: missing pixels as NaN, or a mask passed to ``fit``.

Two common situations on a bundled picture: half of the pixels lost at random,
and a text overlay to remove. The result is compared with scikit-image's
biharmonic inpainting. Runs in two to three minutes on one CPU core (small
image, small network).

    python examples/inpainting.py [--size 64] [--max-iter 1500]

Seen on a shared CPU: 50% random pixels, biharmonic 30.61 dB, DIP 30.89 dB;
text overlay (16% of the pixels), biharmonic 35.07 dB, DIP 34.55 dB. Thin
strokes are an easy case for biharmonic interpolation, and 1500 steps of a
small network do not beat it there.
"""

import argparse

import numpy as np
import torch
from skimage.draw import line
from skimage.morphology import dilation
from skimage.restoration import inpaint_biharmonic

from skdip import DIPInpainter
from skdip.datasets import load_image
from skdip.metrics import psnr


def text_strokes(size: int, rng: np.random.Generator) -> np.ndarray:
    """Three rows of short random strokes, like a caption burnt into the picture."""
    strokes = np.zeros((size, size), dtype=bool)
    for top in (size * 10 // 64, size * 30 // 64, size * 50 // 64):
        for left in range(3, size - 6, 9):
            for _ in range(3):
                r0, r1 = rng.integers(max(top - 4, 0), min(top + 5, size), size=2)
                c0, c1 = rng.integers(left, left + 7, size=2)
                rr, cc = line(r0, c0, r1, c1)
                strokes[rr, cc] = True
    return dilation(strokes, np.ones((2, 2), dtype=bool))  # a 2x2 square footprint


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=1500)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # small problems gain nothing from more threads
    rng = np.random.default_rng(0)
    clean = load_image("camera", size=args.size, as_gray=True)

    # --- 1. half of the pixels missing at random, marked as NaN (as for SimpleImputer)
    observed = clean.copy()
    lost = rng.random(clean.shape) < 0.5
    observed[lost] = np.nan

    inpainter = DIPInpainter(generator="skip-small", max_iter=args.max_iter, random_state=0)
    filled = inpainter.fit_transform(observed)
    baseline = inpaint_biharmonic(np.nan_to_num(observed), lost)
    print(
        f"50% random pixels: biharmonic {psnr(clean, baseline):.2f} dB, "
        f"DIP {psnr(clean, filled):.2f} dB (stopped: {inpainter.stopped_by_}, "
        f"iteration {inpainter.best_iter_})"
    )

    # --- 2. a text-like overlay, given as a boolean mask (True = observed)
    strokes = text_strokes(args.size, rng)
    mask = ~strokes
    with_text = np.where(mask, clean, 1.0)  # white text burnt into the picture

    inpainter = DIPInpainter(generator="skip-small", max_iter=args.max_iter, random_state=0)
    inpainter.fit(with_text, mask=mask)
    baseline = inpaint_biharmonic(with_text, strokes)
    print(
        f"text overlay ({100 * strokes.mean():.0f}% of the pixels): "
        f"biharmonic {psnr(clean, baseline):.2f} dB, "
        f"DIP {psnr(clean, inpainter.reconstruction_):.2f} dB"
    )


if __name__ == "__main__":
    main()
