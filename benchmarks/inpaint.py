"""Inpainting benchmark: DIPInpainter against scikit-image's biharmonic inpainting.

Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/inpaint.py                 # writes benchmarks/results/
    python benchmarks/inpaint.py --images camera --max-iter 300    # a quick look

Two masks on bundled images: 50% of the pixels missing at random, and a
text-like overlay (strokes of a few pixels drawn in character cells). Each
case is solved once by ``DIPInpainter`` with the clean image passed to
``fit`` (only to record the PSNR of every iterate, never to fit or to stop),
so one run gives the PSNR of the returned image (observed pixels put back,
at the iteration chosen by the stopping rule), of the best iterate over the
run (an oracle) and of the last iterate.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, projector_recipe, save, start
from skimage.draw import line
from skimage.morphology import dilation
from skimage.restoration import inpaint_biharmonic

from skdip import DIPInpainter
from skdip.datasets import load_image
from skdip.metrics import psnr, ssim

IMAGES = {
    "camera": ("camera", True),
    "astronaut": ("astronaut", False),
    "coffee": ("coffee", False),
}


def random_mask(shape: tuple[int, int], missing: float, seed: int) -> np.ndarray:
    """True = observed; each pixel is missing with probability ``missing``."""
    return np.random.default_rng(seed).random(shape) >= missing


def text_mask(shape: tuple[int, int], seed: int, cell: int = 9) -> np.ndarray:
    """True = observed; three or four strokes drawn in each character cell of lines of text."""
    rng = np.random.default_rng(seed)
    h, w = shape
    strokes = np.zeros(shape, dtype=bool)
    corners = [(0, 0), (0, 1), (1, 0), (1, 1), (0.5, 0), (0.5, 1), (0, 0.5), (1, 0.5)]
    for top in range(h // 10, h - cell - 3, cell + 11):  # lines of text, 8 pixels apart
        for left in range(2, w - cell + 3, cell + 2):
            for _ in range(rng.integers(3, 5)):
                (r0, c0), (r1, c1) = (
                    corners[i] for i in rng.choice(len(corners), 2, replace=False)
                )
                rr, cc = line(
                    int(top + r0 * (cell + 3)),
                    int(left + c0 * (cell - 3)),
                    int(top + r1 * (cell + 3)),
                    int(left + c1 * (cell - 3)),
                )
                keep = (rr < h) & (cc < w)
                strokes[rr[keep], cc[keep]] = True
    # A 2x2 square footprint spelled as an array: footprint_rectangle came in scikit-image 0.25,
    # and skdip supports 0.22.
    strokes = dilation(strokes, np.ones((2, 2), dtype=bool))
    return ~strokes


# --recipe drp: the Deep Random Projector with its authors' inpainting settings.
RECIPES = {
    "library": lambda generator: {"generator": generator},
    "drp": lambda generator: projector_recipe(lr=0.05, tv_weight=0.01),
}


def run_case(
    image_key: str,
    mask_key: str,
    size: int,
    generator: str,
    max_iter: int,
    seed: int,
    recipe: str = "library",
):
    name, grey = IMAGES[image_key]
    clean = load_image(name, size=size, as_gray=grey)
    shape = clean.shape[:2]
    mask = random_mask(shape, 0.5, seed) if mask_key == "random50" else text_mask(shape, seed)
    observed = clean.copy()
    observed[~mask] = np.nan
    channel_axis = None if grey else -1

    t = time.perf_counter()
    bih = inpaint_biharmonic(np.nan_to_num(observed), ~mask, channel_axis=channel_axis)
    bih_s = time.perf_counter() - t

    settings = RECIPES[recipe](generator)
    inp = DIPInpainter(max_iter=max_iter, random_state=seed, device="cpu", **settings)
    t = time.perf_counter()
    inp.fit(observed, y=clean)
    dip_s = time.perf_counter() - t
    out = inp.reconstruction_
    hist = inp.history_["psnr"]  # the network output, observed pixels not put back
    return {
        "image": image_key,
        "recipe": recipe,
        "size": size,
        "mask": mask_key,
        "missing_pct": 100 * float((~mask).mean()),
        "biharmonic_psnr": psnr(clean, bih),
        "biharmonic_ssim": ssim(clean, bih),
        "biharmonic_s": bih_s,
        "dip_psnr": psnr(clean, out),
        "dip_ssim": ssim(clean, out),
        "dip_best_iter": int(inp.best_iter_),
        "dip_stopped_by": inp.stopped_by_,
        "net_peak_psnr": float(hist.max()),
        "net_peak_iter": int(hist.argmax()),
        "net_last_psnr": float(hist[-1]),
        "n_iter": int(inp.n_iter_),
        "dip_s": dip_s,
        "s_per_step": inp.history_["seconds_per_step"],
    }


RECIPE_TEXT = {
    "library": "library defaults",
    "drp": "DeepRandomProjector(width=128), lr 0.05, loss rmse, TV 0.01, no input noise; "
    "the generator option is then ignored",
}


def write_table(rows: list[dict], path: Path, args) -> None:
    header = (
        "# Inpainting benchmark\n\n"
        f"Command: `{args.command}`  \n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, CPU only. Generator `{args.generator}` "
        f"(recipe `{args.recipe}`: {RECIPE_TEXT[args.recipe]}), "
        f"max_iter {args.max_iter}, early stopping 'emv' (patience 1000), seed {args.seed}; "
        f"{args.size}x{args.size} images (small, to fit the CPU budget).\n\n"
        "PSNR (dB, full image, data range 1) and SSIM against the clean image. 'DIP' is the "
        "returned image (observed pixels kept, iterate chosen by the stopping rule); 'net peak' "
        "and 'net last' are the network output without the observed pixels put back, at the "
        "best iteration of the run (an oracle) and at the last one.\n\n"
        "| image | mask | missing % | biharmonic PSNR | SSIM | DIP PSNR | SSIM | returned @ "
        "| net peak (@) | net last | iters | DIP s | biharmonic s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['image']} | {r['mask']} | {r['missing_pct']:.1f} | {r['biharmonic_psnr']:.2f} | "
        f"{r['biharmonic_ssim']:.3f} | {r['dip_psnr']:.2f} | {r['dip_ssim']:.3f} | "
        f"{r['dip_best_iter']} ({r['dip_stopped_by']}) | {r['net_peak_psnr']:.2f} "
        f"({r['net_peak_iter']}) | {r['net_last_psnr']:.2f} | {r['n_iter']} | {r['dip_s']:.0f} | "
        f"{r['biharmonic_s']:.2f} |"
        for r in rows
    ]
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(__doc__.splitlines()[0], IMAGES, tag="inpaint", max_iter=1500)
    parser.add_argument(
        "--masks", nargs="+", default=["random50", "text"], choices=["random50", "text"]
    )
    parser.add_argument("--recipe", choices=RECIPES, default="library")
    args = parser.parse_args()
    start(args, "inpaint.py")
    rows = []
    for image in args.images:
        for mask in args.masks:
            row = run_case(
                image, mask, args.size, args.generator, args.max_iter, args.seed, args.recipe
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
