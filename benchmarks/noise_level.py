"""How the no-reference score's noise level moves the choice of a setting.

The default no-reference score (``whiteness``) compares each fit's residual
with a noise level, which it estimates from the data unless ``sigma=`` is given.
This script re-scores the fits of ``selection.py`` runs from their saved
estimates with four noise levels and repeats the choices:

- ``all details``: the wavelet MAD over every finest diagonal detail
  (scikit-image's ``estimate_sigma``), the library's estimate until it began to
  leave out the details touched by clipped pixels; the runs up to ``fresh2``
  recorded their scores with it;
- ``wavelet``: that MAD without the details whose support holds a clipped pixel,
  the library's estimate from then until the weak-texture estimate replaced it;
  the runs from ``fresh2`` to ``val5`` recorded their scores with it (the
  recorded scores must reproduce with one of these two);
- ``nominal``: the true sigma of the added noise (what ``sigma=`` would pass);
- ``library``: the library's estimate now (weak-texture patches, with a model
  of the clip; ``skdip/metrics/_noise_level.py``).

It also reports each estimate against the noise power actually in the data,
``mean((noisy - clean) ** 2)``, which clipping lowers below sigma squared.

Run ``selection.py --part grid --save-estimates DIR`` first, then::

    python benchmarks/noise_level.py --tags emv wmv --estimates DIR --name NAME

which reads ``results/selection_<tag>.jsonl`` and ``DIR/<tag>/`` and writes
``results/noise_level_<NAME>.md`` (and ``.jsonl``).

``--part accuracy`` needs no fits: it adds noise to the bundled pictures
(``--sizes``, ``--sigmas`` in /255, ``--noise-seeds``), clips it to [0, 1],
and compares each estimate with the noise power actually added
(``results/noise_level_accuracy[_NAME].md``).

``--part missing`` does the same with pixels missing (NaN, as inpainting scores
them): random pixels (30% and 50%), eight square holes, every fourth row. It
compares the library's estimate with the one it used before (the median over
wholly observed 2x2 blocks) and with the library's estimate on the whole noisy
image, against the noise power in the observed pixels
(``results/noise_level_missing[_NAME].md``). It needs ``--sizes`` of 64 or more: with
half the pixels missing a 32x32 picture can keep too few wholly observed 2x2 blocks
for the library's estimate, which then refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import choice_stats

from skdip.datasets import add_noise, load_image
from skdip.metrics import psnr
from skdip.metrics._noise_level import (
    _DB2_HIGH,
    _MAD_TO_SIGMA,
    _MIN_NOISE_VAR,
    _clipped_pixels,
    _finest_diagonal,
    _haar_diagonal,
    _wavelet_noise_sigma,
)
from skdip.metrics._scorers import _noise_var, _residual_structure
from skdip.model_selection import PreferDefault, best_scored

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("all details", "wavelet", "nominal", "library")
# The estimates whose recorded scores a run may carry: "library" (the weak-texture
# estimate) from val6 on.
RECORDED_WITH = ("all details", "wavelet", "library")
CHOICES = {
    "arg-max": {"n_best": 1},
    "AverageOfBest(n_best=3)": {"n_best": 3},
    "AverageOfBest(margin=1)": {"margin": 1.0},
}
# Anchored on the default setting: it is always averaged, and the others join it only
# if they score at most 0.5 dB below it (pre-registered in 234d4cc).
ANCHORED = {"AverageOfBest(default, n_best=4, margin=0.5)": {"n_best": 4, "margin": 0.5}}
# The same joined only by estimates close to the default's (distance relative to the
# noise level of the variant): pre-registered in 070faa2 and again, unchanged, in a4965de.
CLOSE = {
    "AverageOfBest(default, n_best=4, margin=0.25, max_distance=-10.5)": {
        "n_best": 4,
        "margin": 0.25,
        "max_distance": -10.5,
    }
}
# PreferDefault's margin trades the median gap to the oracle against the cases that
# fall below the default; the sweep shows what each margin costs on these cases.
MARGINS = (0.5, 1.0, 1.5, 2.0, 3.0)
PREFER = [f"PreferDefault(margin={m:g})" for m in MARGINS]


def all_details_noise_var(observation: np.ndarray) -> float:
    """The wavelet-MAD noise variance over every nonzero finest diagonal detail."""
    sigmas = [_wavelet_noise_sigma(observation[..., c]) for c in range(observation.shape[-1])]
    return max(float(np.mean(sigmas)) ** 2, _MIN_NOISE_VAR)


# Fewer wavelet details than this untouched by clipping: the wavelet estimate used them all.
_MIN_UNCLIPPED_DETAILS = 64


def untouched_details_noise_var(observation: np.ndarray) -> float:
    """The wavelet MAD over the finest diagonal details no clipped pixel touches.

    The library's estimate before the weak-texture one (all details where fewer
    than 64 are untouched).
    """
    sigmas = []
    for c in range(observation.shape[-1]):
        channel = observation[..., c]
        detail = _finest_diagonal(channel, _DB2_HIGH)
        keep = detail != 0
        clipped = _clipped_pixels(channel)
        if clipped.any():
            touched = _finest_diagonal(clipped.astype(np.float64), np.ones(4)) != 0
            if np.count_nonzero(keep & ~touched) >= _MIN_UNCLIPPED_DETAILS:
                keep &= ~touched
        detail = np.abs(detail[keep])
        sigmas.append(float(np.median(detail)) / _MAD_TO_SIGMA if detail.size else 0.0)
    return max(float(np.mean(sigmas)) ** 2, _MIN_NOISE_VAR)


def _channels_last(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return a if a.ndim == 3 else a[..., None]


def _whiteness(observation: np.ndarray, estimate: np.ndarray, noise_var: float) -> float:
    residual = max(float(np.mean((estimate - observation) ** 2)), _MIN_NOISE_VAR)
    structure = _residual_structure(observation - estimate)
    return -abs(10.0 * np.log10(residual / noise_var)) - structure


def _cases(tag: str, folder: Path):
    records = [json.loads(line) for line in (RESULTS / f"selection_{tag}.jsonl").open()]
    fits = [r for r in records if r["kind"] == "fit"]
    for image, noise in sorted({(r["image"], r["noise"]) for r in fits}):
        group = [r for r in fits if (r["image"], r["noise"]) == (image, noise)]
        saved = [
            np.load(folder / f"{image}_{noise}_{r['setting'].replace(' ', '_')}.npz") for r in group
        ]
        yield image, noise, group, saved


def run(args) -> None:
    rows = []
    for tag in args.tags:
        for image, noise, group, saved in _cases(tag, Path(args.estimates) / tag):
            noisy = _channels_last(saved[0]["noisy"])
            clean = _channels_last(saved[0]["clean"])
            estimates = np.stack([_channels_last(d["estimate"]) for d in saved])
            true = np.array([psnr(clean, e) for e in estimates])
            sigma = float(noise.removeprefix("gaussian")) / 255
            actual = float(np.mean((noisy - clean) ** 2))
            levels = {
                "all details": all_details_noise_var(noisy),
                "wavelet": untouched_details_noise_var(noisy),
                "nominal": sigma**2,
                "library": _noise_var(noisy, None, 1.0),
            }
            default = next(k for k, r in enumerate(group) if r["default"])
            row = {
                "tag": tag,
                "image": image,
                "noise": noise,
                "clipped": float(np.mean((noisy <= 0) | (noisy >= 1))),
                "oracle": float(true.max()),
                "default": float(true[default]),
            }
            recorded = np.array([r["scores"]["whiteness"] for r in group])
            reproduced = False
            for variant, level in levels.items():
                row[f"{variant}_vs_actual_db"] = 10 * np.log10(level / actual)
                scores = np.array([_whiteness(noisy, e, level) for e in estimates])
                # The recorded scores came from the library's estimate of their time: "all
                # details" up to fresh2, "wavelet" from then to val5, "library" from val6.
                # float32 saved estimates against the float64 fits: rounding only.
                if variant in RECORDED_WITH and np.abs(scores - recorded).max() <= 5e-3:
                    reproduced = True
                for choice, kw in CHOICES.items():
                    members = best_scored(scores, **kw)
                    row[f"{variant}|{choice}"] = psnr(clean, estimates[members].mean(axis=0))
                for choice, kw in ANCHORED.items():
                    members = best_scored(scores, default=default, **kw)
                    row[f"{variant}|{choice}"] = psnr(clean, estimates[members].mean(axis=0))
                # As AverageOfBest(max_distance=) measures it: the mean squared difference
                # to the default's estimate against the noise level.
                spread = np.mean((estimates - estimates[default]) ** 2, axis=(1, 2, 3))
                distances = 10 * np.log10(np.maximum(spread, 1e-30) / level)
                for choice, kw in CLOSE.items():
                    members = best_scored(scores, default=default, distances=distances, **kw)
                    row[f"{variant}|{choice}"] = psnr(clean, estimates[members].mean(axis=0))
                for margin, name in zip(MARGINS, PREFER, strict=True):
                    kept = PreferDefault(default, margin=margin).select([{}] * len(scores), scores)
                    row[f"{variant}|{name}"] = float(true[kept])
            if not reproduced:
                raise RuntimeError(f"{tag} {image}/{noise}: the recorded scores do not reproduce")
            rows.append(row)
    with (RESULTS / f"noise_level_{args.name}.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    write_md(args, rows)


def write_md(args, rows: list[dict]) -> None:
    md = [
        f"# The score's noise level and the choice of a setting ({args.name})",
        "",
        f"Command: `python benchmarks/noise_level.py --tags {' '.join(args.tags)} --estimates "
        f"DIR --name {args.name}` on the estimates saved by `selection.py --part grid "
        "--save-estimates DIR` for those runs (re-scoring with the `all details`, the "
        "`wavelet` or, from val6, the `library` level reproduces the recorded scores). "
        "Noise levels against the noise power actually in the data, "
        "`mean((noisy - clean)**2)`, in dB (< 0: below it); "
        "`clipped`: the share of noisy pixels at 0 or 1.",
        "",
        "| image | noise | clipped | " + " | ".join(VARIANTS) + " |",
        "|---|---|---|" + "---|" * len(VARIANTS),
    ]
    seen = set()
    for r in rows:
        # Every run adds the same noise (seed 0) to an image: one row per image and level.
        if (r["image"], r["noise"]) in seen:
            continue
        seen.add((r["image"], r["noise"]))
        md.append(
            f"| {r['image']} | {r['noise']} | {r['clipped']:.2f} | "
            + " | ".join(f"{r.get(f'{v}_vs_actual_db', np.nan):+.2f}" for v in VARIANTS)
            + " |"
        )
    default = np.array([r["default"] for r in rows])
    oracle = np.array([r["oracle"] for r in rows])
    md += [
        "",
        f"Choices over {len(rows)} cases (PSNR of the choice against the default setting's "
        "and the best setting's):",
        "",
        "| noise level | choice | median gain over default | worst | cases below default "
        "(> 0.5 dB) | median / mean gap to oracle |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for choice in [*CHOICES, *ANCHORED, *CLOSE, *PREFER]:
            if f"{variant}|{choice}" not in rows[0]:
                continue  # a results file written before the choice existed
            s = choice_stats(np.array([r[f"{variant}|{choice}"] for r in rows]), default, oracle)
            md.append(
                f"| {variant} | {choice} | {s['median_gain']:+.2f} | {s['worst_gain']:+.2f} | "
                f"{s['below']} ({s['below_half_db']}) | "
                f"{s['median_gap']:.2f} / {s['mean_gap']:.2f} |"
            )
    (RESULTS / f"noise_level_{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


ACCURACY_VARIANTS = {
    "all details": all_details_noise_var,
    "wavelet": untouched_details_noise_var,
    "library": lambda noisy: _noise_var(noisy, None, 1.0),
}


def _save_rows(prefix: str, name: str | None, rows: list[dict]) -> str:
    """Write ``results/<prefix>[_<name>].jsonl``; return that stem."""
    stem = prefix + (f"_{name}" if name else "")
    with (RESULTS / f"{stem}.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return stem


def _error_cell(errors: list[float]) -> str:
    """A table cell: the median error (dB), the 90th percentile of its size, and the
    cases more than 1 dB off."""
    err = np.array(errors)
    return (
        f"{np.median(err):+.2f}, {np.quantile(np.abs(err), 0.9):.2f}, "
        f"{np.sum(np.abs(err) > 1)}/{err.size}"
    )


def blocks_noise_var(observation: np.ndarray) -> float:
    """The library's estimate with missing pixels before the weak-texture one: the MAD
    of the diagonal Haar detail over the wholly observed 2x2 blocks that tile the image,
    all channels pooled."""
    detail = _haar_diagonal(observation)[::2, ::2]
    detail = detail[np.isfinite(detail)]
    return max(float(np.median(np.abs(detail)) / _MAD_TO_SIGMA) ** 2, _MIN_NOISE_VAR)


MISSING_KINDS = ("random 30%", "random 50%", "8 holes", "every 4th row")


def missing_mask(shape: tuple[int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """Observed pixels (True) for one of ``MISSING_KINDS``."""
    h, w = shape
    observed = np.ones((h, w), dtype=bool)
    if kind.startswith("random"):
        observed = rng.random((h, w)) >= int(kind[7:9]) / 100
    elif kind == "8 holes":
        side = h // 8
        for _ in range(8):
            i, j = rng.integers(0, h - side), rng.integers(0, w - side)
            observed[i : i + side, j : j + side] = False
    else:
        observed[::4] = False
    return observed


def _noisy_pictures(args):
    """``(size, image, sigma, seed, clean, noisy)`` for every bundled picture, size, noise
    level (/255) and noise seed: Gaussian noise clipped to [0, 1]."""
    from selection import ALL_IMAGES

    for size in args.sizes:
        for image, (name, grey) in ALL_IMAGES.items():
            clean = _channels_last(load_image(name, size=size, as_gray=grey))
            for sigma in args.sigmas:
                for seed in args.noise_seeds:
                    noisy = add_noise(clean, "gaussian", sigma / 255, random_state=seed)
                    yield size, image, sigma, seed, clean, noisy


def run_missing(args) -> None:
    """The estimate with missing pixels against the noise power in the observed ones."""
    from selection import ALL_IMAGES

    variants = {
        "2x2 blocks (before)": blocks_noise_var,
        "library": lambda noisy: _noise_var(noisy, None, 1.0),
    }
    rows = []
    for size, image, sigma, seed, clean, noisy in _noisy_pictures(args):
        whole = 10 * np.log10(_noise_var(noisy, None, 1.0) / np.mean((noisy - clean) ** 2))
        rng = np.random.default_rng(seed)
        for kind in MISSING_KINDS:
            observed = missing_mask(clean.shape[:2], kind, rng)[..., None]
            observed = np.broadcast_to(observed, noisy.shape)
            actual = float(np.mean((noisy - clean)[observed] ** 2))
            holed = np.where(observed, noisy, np.nan)
            row = {"size": size, "image": image, "sigma": sigma, "seed": seed}
            row.update(kind=kind, **{"whole image": whole})
            for variant, estimate in variants.items():
                row[variant] = 10 * np.log10(estimate(holed) / actual)
            rows.append(row)
    columns = [*variants, "whole image"]
    stem = _save_rows("noise_level_missing", args.name, rows)
    md = [
        "# The noise level's accuracy with missing pixels",
        "",
        f"Command: `{args.command}`. Each estimate against the noise power actually in the "
        "observed pixels (Gaussian noise clipped to [0, 1]), in dB, over the "
        f"{len(ALL_IMAGES)} bundled pictures, sizes {', '.join(map(str, args.sizes))} and "
        f"noise seeds {', '.join(map(str, args.noise_seeds))}: the median error, the 90th "
        "percentile of its size, and the cases more than 1 dB off. `whole image`: the "
        "library's estimate on the same noisy picture with no pixel missing, against the "
        "noise power in all its pixels (what the estimate reaches when nothing is missing).",
        "",
        "| missing | sigma (/255) | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for kind in MISSING_KINDS:
        for sigma in args.sigmas:
            chosen = [r for r in rows if r["kind"] == kind and r["sigma"] == sigma]
            cells = [_error_cell([r[column] for r in chosen]) for column in columns]
            md.append(f"| {kind} | {sigma:g} | " + " | ".join(cells) + " |")
    md += ["", "All cases:", ""]
    for column in columns:
        err = np.array([r[column] for r in rows])
        md.append(
            f"- {column}: median size {np.median(np.abs(err)):.2f} dB, 90th percentile "
            f"{np.quantile(np.abs(err), 0.9):.2f}, more than 1 dB off {np.sum(np.abs(err) > 1)}"
            f"/{err.size}, range {err.min():+.2f} to {err.max():+.2f}"
        )
    gap = np.array([r["library"] - r["whole image"] for r in rows])
    md.append(
        f"- library minus whole image: median {np.median(gap):+.2f} dB, 90th percentile of "
        f"its size {np.quantile(np.abs(gap), 0.9):.2f}, more than 1 dB apart "
        f"{np.sum(np.abs(gap) > 1)}/{gap.size}, range {gap.min():+.2f} to {gap.max():+.2f}"
    )
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def run_accuracy(args) -> None:
    """Each estimate against the noise power actually added, on the bundled pictures."""
    from selection import ALL_IMAGES

    rows = []
    for size, image, sigma, seed, clean, noisy in _noisy_pictures(args):
        actual = float(np.mean((noisy - clean) ** 2))
        row = {"size": size, "image": image, "sigma": sigma, "seed": seed}
        row["clipped"] = float(np.mean((noisy <= 0) | (noisy >= 1)))
        for variant, estimate in ACCURACY_VARIANTS.items():
            row[variant] = 10 * np.log10(estimate(noisy) / actual)
        rows.append(row)
    stem = _save_rows("noise_level_accuracy", args.name, rows)
    md = [
        "# The noise level's accuracy on the bundled pictures",
        "",
        f"Command: `{args.command}`. Each estimate against the noise power actually in the "
        "data, `mean((noisy - clean)**2)` (Gaussian noise clipped to [0, 1]), in dB, over "
        f"the {len(ALL_IMAGES)} bundled pictures and noise seeds "
        f"{', '.join(map(str, args.noise_seeds))}: the median error, the 90th percentile of "
        "its size, and the cases more than 1 dB off.",
        "",
        "| size | sigma (/255) | " + " | ".join(ACCURACY_VARIANTS) + " |",
        "|---|---|" + "---|" * len(ACCURACY_VARIANTS),
    ]
    for size in args.sizes:
        for sigma in args.sigmas:
            chosen = [r for r in rows if r["size"] == size and r["sigma"] == sigma]
            cells = [_error_cell([r[variant] for r in chosen]) for variant in ACCURACY_VARIANTS]
            md.append(f"| {size} | {sigma:g} | " + " | ".join(cells) + " |")
    md += ["", "Worst cases (library, more than 1.5 dB off):", ""]
    for r in sorted(rows, key=lambda r: -abs(r["library"])):
        if abs(r["library"]) <= 1.5:
            break
        md.append(
            f"- {r['image']} {r['size']}px sigma {r['sigma']:g} seed {r['seed']}: "
            f"{r['library']:+.2f} dB (clipped {r['clipped']:.2f}; wavelet {r['wavelet']:+.2f})"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["rescore", "accuracy", "missing"], default="rescore")
    parser.add_argument("--tags", nargs="+", help="for rescore")
    parser.add_argument("--estimates", help="for rescore: the --save-estimates folder")
    parser.add_argument("--name", help="results file suffix (needed for rescore)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[5, 10, 15, 20, 30, 45])
    parser.add_argument("--noise-seeds", nargs="+", type=int, default=[100, 101])
    args = parser.parse_args(argv)
    args.command = "python benchmarks/noise_level.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.part == "accuracy":
        run_accuracy(args)
        return
    if args.part == "missing":
        run_missing(args)
        return
    if not (args.tags and args.estimates and args.name):
        parser.error("--part rescore needs --tags, --estimates and --name")
    run(args)


if __name__ == "__main__":
    main()
