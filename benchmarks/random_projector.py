"""Deep Random Projector benchmark: quality and time against the skip network.

Run by hand (not in CI)::

    python benchmarks/random_projector.py --images camera --tag random_projector_camera
    python benchmarks/random_projector.py --merge random_projector_camera random_projector_astronaut

Each configuration denoises the same noisy image (Gaussian, sigma 25/255) with
ES-EMV at the library's default patience; the clean image is passed to ``fit``
only to record the PSNR of every iterate. Recorded: the best PSNR of the run
and its step (an oracle), what the stopping rule returned, the last iterate, the
cost of a step, and the time until the peak and until the fit ended. The
configurations:

* ``dip skip-small``: the CPU-sized skip network, library defaults (Adam 0.01,
  MSE, input noise 1/30);
* ``dip skip``: the paper-sized skip network (128 channels, 5 scales), the
  same defaults: the baseline the projector's authors compared with, on a GPU;
* ``drp recipe``: ``generator="drp"`` with the settings its authors give for
  denoising (Adam 0.1, square root of the MSE, TV weight 0.45, no input noise);
* ``drp recipe, no TV``: the same without the penalty;
* ``drp, library defaults``: ``generator="drp"`` with nothing else changed;
* ``tv (Chambolle 0.1)``: no network, scikit-image's total-variation denoiser
  (weight 0.1), the classical method the recipe's penalty comes from.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, merge_saved, run_settings, save, start, where_fits_ran
from skimage.restoration import denoise_tv_chambolle

from skdip import DIPDenoiser, TotalVariation
from skdip.datasets import add_gaussian_noise, load_image
from skdip.metrics import psnr

RECIPE = dict(lr=0.1, loss="rmse", regularizer=TotalVariation(weight=0.45), reg_noise_std=0.0)
# label -> (generator, settings, max_iter)
CONFIGS = {
    "dip skip-small": ("skip-small", {}, 3000),
    "dip skip": ("skip", {}, 3000),
    "drp recipe": ("drp", RECIPE, 1500),
    "drp recipe, no TV": ("drp", {**RECIPE, "regularizer": None}, 1500),
    "drp, library defaults": ("drp", {}, 1500),
    "tv (Chambolle 0.1)": (None, {}, 0),
}
IMAGES = ("camera", "astronaut", "coffee", "chelsea")


def run_case(
    label: str,
    image: str,
    clean: np.ndarray,
    noisy: np.ndarray,
    seed: int,
    steps: int,
    device: str = "cpu",
) -> dict:
    generator, settings, max_iter = CONFIGS[label]
    if generator is None:
        return _tv_case(label, image, clean, noisy)
    max_iter = steps or max_iter  # --max-iter overrides every configuration's budget
    den = DIPDenoiser(
        generator=generator, max_iter=max_iter, random_state=seed, device=device, **settings
    )
    t = time.perf_counter()
    den.fit(noisy, y=clean)
    wall = time.perf_counter() - t
    curve = np.asarray(den.history_["psnr"])
    per_step = float(den.history_["seconds_per_step"])
    peak = int(curve.argmax())
    return {
        "image": image,
        "config": label,
        "noisy_psnr": psnr(clean, noisy),
        "peak_psnr": float(curve.max()),
        "peak_iter": peak,
        "detected_psnr": psnr(clean, np.clip(den.reconstruction_, 0, 1)),
        "detected_iter": int(den.best_iter_),
        "last_psnr": float(curve[-1]),
        "n_iter": int(den.n_iter_),
        "stopped_by": den.stopped_by_,
        "s_per_step": per_step,
        "s_to_peak": per_step * (peak + 1),
        "wall_s": wall,
    }


def _tv_case(label: str, image: str, clean: np.ndarray, noisy: np.ndarray) -> dict:
    t = time.perf_counter()
    out = denoise_tv_chambolle(noisy, weight=0.1, channel_axis=-1 if noisy.ndim == 3 else None)
    wall = time.perf_counter() - t
    value = psnr(clean, out)
    return {
        "image": image,
        "config": label,
        "noisy_psnr": psnr(clean, noisy),
        "peak_psnr": value,
        "peak_iter": None,
        "detected_psnr": value,
        "detected_iter": None,
        "last_psnr": value,
        "n_iter": None,
        "stopped_by": "-",
        "s_per_step": None,
        "s_to_peak": wall,
        "wall_s": wall,
    }


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _run_settings(args) -> str:
    """The settings of this run's fits, kept in each row: a merged table's header is
    made from its rows, not from the --merge command line."""
    return (
        f"Machine: {platform.machine()}, {args.threads} torch thread(s) per process, torch "
        f"{torch.__version__}, {where_fits_ran(args)}; TV on the CPU. "
        f"Images {args.size}x{args.size}, Gaussian noise sigma 25/255, noise and fit seed "
        f"{args.seed}"
    )


def write_table(rows: list[dict], path: Path, args) -> None:
    header = (
        "# Deep Random Projector benchmark (denoising)\n\n"
        f"{args.commands}  \n"
        f"{run_settings(rows)}, ES-EMV (library defaults: patience 1000, warm-up 100).\n\n"
        "PSNR in dB against the clean image. 'peak' = the best iterate of the run (an oracle) "
        "and its step; 'returned' = the estimate at the running-variance minimum; 's to peak' = "
        "seconds per step times the steps to the peak; 'wall' = the whole fit.\n\n"
        "| image | configuration | noisy | peak (@) | returned (@) | last | stopped by | iters "
        "| s/step | s to peak | wall s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['image']} | {r['config']} | {r['noisy_psnr']:.2f} | {r['peak_psnr']:.2f} "
        f"({_cell(r['peak_iter'], 'd')}) | {r['detected_psnr']:.2f} "
        f"({_cell(r['detected_iter'], 'd')}) | {r['last_psnr']:.2f} | {r['stopped_by']} | "
        f"{_cell(r['n_iter'], 'd')} | {_cell(r['s_per_step'], '.4f')} | "
        f"{r['s_to_peak']:.0f} | {r['wall_s']:.0f} |"
        for r in rows
    ]
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(
        __doc__.splitlines()[0],
        dict.fromkeys(IMAGES),
        tag="random_projector",
        max_iter=0,
        generator=False,  # each configuration names its own
    )
    parser.set_defaults(size=128)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--device", default="cpu", help='torch device of the fits, e.g. "cuda"')
    parser.add_argument(
        "--merge", nargs="+", metavar="TAG", help="join earlier results files into --tag"
    )
    args = parser.parse_args()
    start(args, "random_projector.py")
    if args.merge:
        merge_saved(args, write_table)
        return
    args.commands = f"Commands: `{args.command}`"
    rows = []
    for image in args.images:
        clean = load_image(image, size=args.size)
        noisy = add_gaussian_noise(clean, 25 / 255, random_state=args.seed)
        for label in args.configs:
            row = run_case(label, image, clean, noisy, args.seed, args.max_iter, device=args.device)
            row["command"] = args.command
            row["settings"] = _run_settings(args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
