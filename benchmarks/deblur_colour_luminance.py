"""Blind deblurring of colour pictures, exploratory: the kernel from the luminance.

Run by hand (not in CI)::

    python benchmarks/deblur_colour_luminance.py   # writes results/deblur_colour_luminance.*

``BlindDeblurrer`` fitted on colour pictures often came out below the blurry input
(chelsea and rocket in ``results/deblur_colour.md``), where on grey pictures it
gained about 2 dB over it. This script tries a two-step alternative, not offered by
skdip yet: estimate the kernel with ``BlindDeblurrer`` on the channel mean of the
blurry picture (one grey image; its default weight for one channel), then
deconvolve the colour picture with that kernel by ``DIPDeconvolver(boundary="valid")``.
The cases are those of ``deblur_colour.py`` (64x64 crops, 'valid' blur, shake index 0,
noise 0.01 and 0.05, ES-EMV patience 200, at most 600 iterations per fit, fit seed 0 (``--seed``),
CPU); the table sets it beside that script's default column ("per size and channel",
the default weight since 2026-11-29) and the blurry input, read from
``results/deblur_colour.jsonl`` (seed 0) or ``results/deblur_colour_seed1_*.jsonl``
(``--seed 1 --tag deblur_colour_luminance_seed1``). Rows already in the results file
are kept (the run can be resumed). Exploratory: with both seeds it was not better than
the default on the whole (doc/blind_deblurring.md).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
from deblur_colour import difference_summary, make_colour_case, parse_case_arguments

from skdip import BlindDeblurrer, DIPDeconvolver
from skdip.metrics import aligned_psnr, kernel_error
from skdip.stopping import ExponentialMovingVariance

RESULTS = Path(__file__).parent / "results"
# The settings of the deblur_colour.py runs the table compares with (their rows do not
# record them; their tables' headers do).
REFERENCE_SETTINGS = {"size": 64, "max_iter": 600, "patience": 200}


def luminance_then_colour(blurry: np.ndarray, args) -> tuple[np.ndarray, np.ndarray]:
    """The kernel fitted on the channel mean, then the colour image deconvolved with it."""
    rule = ExponentialMovingVariance(patience=args.patience)
    common = dict(early_stopping=rule, max_iter=args.max_iter, random_state=args.seed)
    deb = BlindDeblurrer(device="cpu", **common).fit(blurry.mean(axis=-1))
    kernel = deb.kernel_ / deb.kernel_.sum()
    dec = DIPDeconvolver(kernel=kernel, boundary="valid", device="cpu", **common)
    return dec.fit_transform(blurry), kernel


def run(args) -> list[dict]:
    out = RESULTS / f"{args.tag}.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["image"], r["family"], r["noise"]) for r in rows}
    with out.open("a") as fh:
        for image in args.images:
            for family in args.families:
                for noise in args.noises:
                    if (image, family, noise) in done:
                        continue
                    truth, blurry, kernel = make_colour_case(image, family, noise, args.size, 0)
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        estimate, estimated_kernel = luminance_then_colour(blurry, args)
                    row = dict(image=image, family=family, noise=noise)
                    row.update(
                        psnr=aligned_psnr(truth, estimate, max_shift=10),
                        kernel_error=kernel_error(kernel, estimated_kernel),
                        time=time.perf_counter() - start,
                    )
                    print(json.dumps(row), flush=True)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    rows.append(row)
    return rows


def write_md(rows: list[dict], args) -> None:
    # The default's runs with the same fit seed: deblur_colour.py's own results for seed
    # 0, its ``--seed 1`` runs (two files, split by image) for seed 1.
    names = (
        ["deblur_colour.jsonl"] if args.seed == 0 else [f"deblur_colour_seed{args.seed}_*.jsonl"]
    )
    files = sorted(f for name in names for f in RESULTS.glob(name))
    if not files:
        raise SystemExit(f"no results of deblur_colour.py with --seed {args.seed} to compare with")
    reference = [json.loads(line) for f in files for line in f.read_text().splitlines()]

    def psnr_of(kind: str, key: tuple) -> float:
        return next(
            r["psnr"]
            for r in reference
            if r["weight"] == kind and (r["image"], r["family"], r["noise"]) == key
        )

    md = [
        "# Blind deblurring of colour pictures: the kernel from the luminance (exploratory)",
        "",
        f"Command: `{args.command}`. The cases of `deblur_colour.py` (64x64 colour crops, "
        "'valid' blur, shake index 0, size unknown), ES-EMV patience "
        f"{args.patience}, at most {args.max_iter} iterations per fit, fit seed {args.seed}, "
        "CPU. Luminance: BlindDeblurrer on the channel mean, then "
        "DIPDeconvolver(boundary='valid') of the colour picture with its kernel. Default: "
        f"BlindDeblurrer on the colour picture ({', '.join(f'`{f.stem}.md`' for f in files)}: "
        "'per size and channel', the same fit seed). "
        "Aligned PSNR (dB) / kernel error.",
        "",
        "| image | blur | noise | luminance | default | blurry input |",
        "|---|---|---|---|---|---|",
    ]
    gains, over_blurry, default_over_blurry = [], 0, 0
    for r in rows:
        key = (r["image"], r["family"], r["noise"])
        default, blurry = psnr_of("per size and channel", key), psnr_of("blurry", key)
        default_error = next(
            o["kernel_error"]
            for o in reference
            if o["weight"] == "per size and channel"
            and (o["image"], o["family"], o["noise"]) == key
        )
        gains.append(r["psnr"] - default)
        over_blurry += r["psnr"] > blurry
        default_over_blurry += default > blurry
        md.append(
            f"| {r['image']} | {r['family']} | {r['noise']:g} | {r['psnr']:.2f} / "
            f"{r['kernel_error']:.3f} | {default:.2f} / {default_error:.3f} | {blurry:.2f} |"
        )
    md += [
        "",
        f"{difference_summary('Luminance minus default', gains)}. Above the blurry input: "
        f"luminance {over_blurry} of {len(gains)}, default {default_over_blurry}.",
    ]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv=None) -> None:
    args = parse_case_arguments(
        __doc__, "deblur_colour_luminance.py", "deblur_colour_luminance", argv
    )
    # Checked before any fit: the default's column would come from other fits.
    differ = [
        f"--{key.replace('_', '-')} {getattr(args, key)} (theirs: {value})"
        for key, value in REFERENCE_SETTINGS.items()
        if getattr(args, key) != value
    ]
    if differ:
        raise SystemExit(
            "the results of deblur_colour.py this table compares with were made with other "
            f"settings than {', '.join(differ)}"
        )
    write_md(run(args), args)


if __name__ == "__main__":
    main()
