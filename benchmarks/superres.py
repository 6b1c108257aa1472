"""Super-resolution benchmark: DIPSuperResolver against bicubic upsampling.

Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/superres.py                # writes benchmarks/results/
    python benchmarks/superres.py --images camera --scales 4 --max-iter 300   # a quick look
    python benchmarks/superres.py --recipe drp --device cuda --size 256 --tag superres_drp

The low-resolution image is the clean high-resolution one downsampled with
the Lanczos-2 operator (the DIP paper's model, also the estimator's default).
Each case is solved once, with the clean image passed to ``fit`` only to
record the PSNR of every iterate: the table gives the PSNR of the image the
estimator returns (chosen by the running-variance stopping rule), the best
PSNR over the run (an oracle) and the detection gap between them.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, projector_recipe, save, start, where_fits_ran
from skimage.transform import resize

from skdip import DIPSuperResolver
from skdip.datasets import load_image
from skdip.metrics import psnr, ssim
from skdip.operators import Downsample

IMAGES = {
    "camera": ("camera", True),
    "astronaut": ("astronaut", False),
    "coffee": ("coffee", False),
}


# --recipe drp: the Deep Random Projector with its authors' super-resolution settings.
RECIPES = {
    "library": lambda generator: {"generator": generator},
    "drp": lambda generator: projector_recipe(lr=0.5, tv_weight=0.75),
}
RECIPE_TEXT = {
    "library": "library defaults",
    "drp": "DeepRandomProjector(width=128), lr 0.5, loss rmse, TV 0.75, no input noise; "
    "the generator option is then ignored",
}


def downsample(image: np.ndarray, scale: int) -> np.ndarray:
    x = torch.as_tensor(np.atleast_3d(image).transpose(2, 0, 1)[None].copy())
    low = Downsample(scale, kernel="lanczos2")(x)[0].numpy().transpose(1, 2, 0)
    return np.clip(low[..., 0] if image.ndim == 2 else low, 0, 1)


def run_case(
    image_key: str,
    scale: int,
    size: int,
    generator: str,
    max_iter: int,
    seed: int,
    recipe: str = "library",
    device: str = "cpu",
):
    name, grey = IMAGES[image_key]
    clean = load_image(name, size=size, as_gray=grey)
    low = downsample(clean, scale)
    bicubic = np.clip(resize(low, clean.shape, order=3, anti_aliasing=False), 0, 1)
    settings = RECIPES[recipe](generator)
    sr = DIPSuperResolver(
        scale=scale, max_iter=max_iter, random_state=seed, device=device, **settings
    )
    t = time.perf_counter()
    sr.fit(low, y=clean)
    dip_s = time.perf_counter() - t
    out = sr.reconstruction_
    hist = sr.history_["psnr"]
    returned = psnr(clean, np.clip(out, 0, 1))
    return {
        "image": image_key,
        "recipe": recipe,
        "size": size,
        "scale": scale,
        "bicubic_psnr": psnr(clean, bicubic),
        "bicubic_ssim": ssim(clean, bicubic),
        "dip_psnr": returned,
        "dip_ssim": ssim(clean, np.clip(out, 0, 1)),
        "dip_best_iter": int(sr.best_iter_),
        "dip_stopped_by": sr.stopped_by_,
        "peak_psnr": float(hist.max()),
        "peak_iter": int(hist.argmax()),
        "last_psnr": float(hist[-1]),
        "gap_db": float(hist.max()) - returned,
        "n_iter": int(sr.n_iter_),
        "dip_s": dip_s,
        "s_per_step": sr.history_["seconds_per_step"],
    }


def write_table(rows: list[dict], path: Path, args) -> None:
    header = (
        "# Super-resolution benchmark\n\n"
        f"Command: `{args.command}`  \n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, {where_fits_ran(args)}. Generator `{args.generator}` "
        f"(recipe `{args.recipe}`: {RECIPE_TEXT[args.recipe]}), "
        f"max_iter {args.max_iter}, early stopping 'emv' (patience 1000), seed {args.seed}; "
        f"high-resolution images {args.size}x{args.size}, "
        "low resolution made with the Lanczos-2 downsampler.\n\n"
        "PSNR (dB, whole image, all channels, data range 1) against the clean high-resolution "
        "image. 'DIP' = the returned image (iterate chosen by the stopping rule); 'peak' = the "
        "best iterate of the run (an oracle); gap = peak - DIP.\n\n"
        "| image | scale | bicubic PSNR | SSIM | DIP PSNR | SSIM | returned @ | peak (@) | "
        "gap | last | iters | DIP s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['image']} | x{r['scale']} | {r['bicubic_psnr']:.2f} | {r['bicubic_ssim']:.3f} | "
        f"{r['dip_psnr']:.2f} | {r['dip_ssim']:.3f} | {r['dip_best_iter']} "
        f"({r['dip_stopped_by']}) | {r['peak_psnr']:.2f} ({r['peak_iter']}) | "
        f"{r['gap_db']:.2f} | {r['last_psnr']:.2f} | {r['n_iter']} | {r['dip_s']:.0f} |"
        for r in rows
    ]
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(__doc__.splitlines()[0], IMAGES, tag="superres", max_iter=1000)
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--recipe", choices=RECIPES, default="library")
    parser.add_argument("--device", default="cpu", help='torch device of the fits, e.g. "cuda"')
    args = parser.parse_args()
    start(args, "superres.py")
    rows = []
    for image in args.images:
        for scale in args.scales:
            row = run_case(
                image,
                scale,
                args.size,
                args.generator,
                args.max_iter,
                args.seed,
                recipe=args.recipe,
                device=args.device,
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
