"""Blind deblurring of colour pictures: the GradientRatio weight per channel count.

Run by hand (not in CI)::

    python benchmarks/deblur_colour.py            # writes results/deblur_colour.{jsonl,md}

``BlindDeblurrer``'s default regularizer is ``GradientRatio``; its weight was
``8e-4 / sqrt(H' W')`` for the generated ``H' x W'`` image, tuned on grey
pictures. With ``C`` channels the ratio's gradient with respect to a pixel,
of order ``1 / ||grad x||_2``, falls as ``1 / sqrt(C)``, while that of the mean
squared error (a mean over ``C H W`` values) falls as ``1 / C``: relative to
the data term, the penalty weighs ``sqrt(C)`` times more, about 1.7 times on
colour pictures. This script compares, on colour crops (``--size``, 64 px by
default) blurred as in ``deblur.py`` (``'valid'`` blur, seeded camera shakes and
a Gaussian, white noise), with the defaults otherwise (size unknown, ES-EMV), two
explicit weights:

- ``per size``: ``8e-4 / sqrt(H' W')`` (the default until 2026-11-29, whatever
  the channel count);
- ``per size and channel``: ``8e-4 / sqrt(C H' W')`` (the default since, chosen
  on seeds 0 and 1: ``deblur_colour.md``, ``deblur_colour_seed1_a.md`` and
  ``_b.md``).

Scores: PSNR after the best integer alignment within +-10 px and a 10 px border
crop; the kernel error up to shift. ONE fit seed per case, CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from deblur import make_kernel

from skdip import BlindDeblurrer
from skdip.datasets import add_gaussian_noise, blur, load_image
from skdip.estimators._deblur import _RATIO_WEIGHT, auto_kernel_size
from skdip.losses import GradientRatio
from skdip.metrics import aligned_psnr, kernel_error
from skdip.stopping import ExponentialMovingVariance

RESULTS = Path(__file__).parent / "results"
WEIGHTS = ("per size", "per size and channel")


def make_colour_case(image: str, family: str, noise: float, size: int, index: int):
    kernel = make_kernel(family, index)
    kh = kernel.shape[0]
    full = load_image(image, size=2 * size)
    extent = size + kh - 1
    top = (full.shape[0] - extent) // 2
    sharp = full[top : top + extent, top : top + extent]
    blurry = np.stack([blur(sharp[..., c], kernel, mode="valid") for c in range(3)], axis=-1)
    if noise > 0:
        blurry = add_gaussian_noise(blurry, noise, random_state=1000 + index)
    c = kh // 2
    return sharp[c : c + size, c : c + size], blurry, kernel


def weight(kind: str, size: int, channels: int) -> float:
    side = size + auto_kernel_size(size, size) - 1  # the generated image's side
    per_size = _RATIO_WEIGHT / math.sqrt(side * side)
    return per_size if kind == "per size" else per_size / math.sqrt(channels)


def run(args) -> list[dict]:
    rows = []
    out = RESULTS / f"{args.tag}.jsonl"
    with out.open("w") as fh:
        for image in args.images:
            for family in args.families:
                for noise in args.noises:
                    truth, blurry, kernel = make_colour_case(image, family, noise, args.size, 0)
                    for kind in WEIGHTS:
                        deb = BlindDeblurrer(
                            regularizer=GradientRatio(weight=weight(kind, args.size, 3)),
                            early_stopping=ExponentialMovingVariance(patience=args.patience),
                            max_iter=args.max_iter,
                            random_state=args.seed,
                            device="cpu",
                        )
                        start = time.perf_counter()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            estimate = deb.fit_transform(blurry)
                        row = dict(image=image, family=family, noise=noise, weight=kind)
                        row.update(
                            psnr=aligned_psnr(truth, estimate, max_shift=10),
                            kernel_error=kernel_error(kernel, deb.kernel_),
                            time=time.perf_counter() - start,
                            n_iter=int(deb.n_iter_),
                        )
                        print(json.dumps(row), flush=True)
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
                        rows.append(row)
                    blurry_psnr = aligned_psnr(truth, np.clip(blurry, 0, 1), max_shift=10)
                    rows.append(
                        dict(
                            image=image,
                            family=family,
                            noise=noise,
                            weight="blurry",
                            psnr=blurry_psnr,
                            kernel_error=float("nan"),
                            time=0.0,
                        )
                    )
                    fh.write(json.dumps(rows[-1]) + "\n")
    return rows


def write_md(rows: list[dict], args) -> None:
    window = auto_kernel_size(args.size, args.size)  # the kernel size BlindDeblurrer assumes
    md = [
        "# Blind deblurring of colour pictures: the ratio weight per channel count",
        "",
        f"Command: `{args.command}`. {args.size}x{args.size} colour crops "
        f"({', '.join(args.images)}), 'valid' "
        f"blur ({', '.join(args.families)}, shake index 0), noise {args.noises}, size unknown "
        f"({window}x{window} window), ES-EMV patience {args.patience}, at most {args.max_iter} "
        f"iterations, fit seed {args.seed}, CPU. Aligned PSNR (dB) / kernel error.",
        "",
        "| image | blur | noise | " + " | ".join(WEIGHTS) + " | blurry input |",
        "|---|---|---|" + "---|" * (len(WEIGHTS) + 1),
    ]
    for image in args.images:
        for family in args.families:
            for noise in args.noises:
                cells = []
                for kind in (*WEIGHTS, "blurry"):
                    r = next(
                        r
                        for r in rows
                        if (r["image"], r["family"], r["noise"], r["weight"])
                        == (image, family, noise, kind)
                    )
                    cells.append(
                        f"{r['psnr']:.2f}"
                        if kind == "blurry"
                        else f"{r['psnr']:.2f} / {r['kernel_error']:.3f}"
                    )
                md.append(f"| {image} | {family} | {noise:g} | " + " | ".join(cells) + " |")
    diffs = []
    for r in rows:
        if r["weight"] == WEIGHTS[1]:
            other = next(
                o
                for o in rows
                if o["weight"] == WEIGHTS[0]
                and (o["image"], o["family"], o["noise"]) == (r["image"], r["family"], r["noise"])
            )
            diffs.append(r["psnr"] - other["psnr"])
    md += ["", difference_summary("Per size and channel minus per size", diffs) + "."]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def difference_summary(label: str, diffs) -> str:
    """One line on PSNR differences (dB) between two methods, case by case."""
    diffs = np.asarray(diffs, dtype=float)
    return (
        f"{label}: mean {diffs.mean():+.2f} dB, median {np.median(diffs):+.2f}, better in "
        f"{np.sum(diffs > 0)} of {diffs.size} cases, range {diffs.min():+.2f} to "
        f"{diffs.max():+.2f} dB"
    )


def parse_case_arguments(doc: str, script: str, tag: str, argv=None) -> argparse.Namespace:
    """The options of the colour cases and their fits, and the command line that
    ``script`` (in ``benchmarks/``, described by ``doc``) was run with (shared with
    ``deblur_colour_luminance.py``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["astronaut", "coffee", "chelsea", "rocket"])
    parser.add_argument("--families", nargs="+", default=["motion", "gaussian"])
    parser.add_argument("--noises", nargs="+", type=float, default=[0.01, 0.05])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=600)
    parser.add_argument("--patience", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=tag)
    args = parser.parse_args(argv)
    args.command = f"python benchmarks/{script} " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    return args


def main(argv=None) -> None:
    args = parse_case_arguments(__doc__, "deblur_colour.py", "deblur_colour", argv)
    write_md(run(args), args)


if __name__ == "__main__":
    main()
