"""Residual stopping rules through a forward model: deblurring, upscaling, inpainting.

Could ``DiscrepancyPrinciple`` and ``NoiseLevelDeadline`` serve problems with a
forward model ``f``, comparing each iterate ``x_t`` through it with the observation
``y``: ``mean((f(x_t) - y)**2)`` against the noise power, which skdip's no-reference
estimator (``skdip.metrics._noise_level.estimate_noise_var``) reads from ``y``? This
benchmark records every raw iterate of ``DIPDeconvolver``, ``DIPSuperResolver`` and
``DIPInpainter`` fits with ES-EMV (``early_stopping="emv"``, their default;
``output_averaging`` None, their default, so the estimate is the raw iterate) on
64x64 crops of bundled pictures, and scores on the same iterates what each rule
would return:

- ``emv``: what the fit returned (the iterate at the variance minimum);
- ``discrepancy``: the first iterate from the rule's first check (step 100) whose
  residual reaches the estimated noise power (``discrepancy_step``; the fit would
  end 100 steps later);
- ``deadline``: ES-EMV's minimum so far at that step, unless ES-EMV stopped first;
- ``peak``: the best iterate of the run (an oracle).

Problems: ``deblur`` blurs the crop with a 9x9 Gaussian kernel of width 1.6
(circular boundary, the estimator's default); ``superres`` downsamples it by 2 with
the estimator's default kernel (Lanczos-2) to 32x32; ``inpaint`` keeps a random half
of its pixels (``DIPInpainter(keep_observed=False)``, so that the network's output is
scored; the residual and the noise are read on the observed pixels). White Gaussian
noise of the given level is added (seed 0).

The rules themselves refuse these problems: measured here, the residual read
through the forward model did not earn its place (``results/discrepancy_operators.md``),
so this script computes it from the recorded iterates itself.

Slow on a CPU: 3 to 8 minutes a fit on one thread (two fits at a time on 2 cores).
Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/discrepancy_operators.py deblur:camera:0.01
    python benchmarks/discrepancy_operators.py --table
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from _common import RESULTS, thread_counts
from output_averaging import PICTURES

from skdip import DIPDeconvolver, DIPInpainter, DIPSuperResolver
from skdip.datasets import add_gaussian_noise, make_gaussian_kernel
from skdip.metrics import psnr
from skdip.metrics._noise_level import estimate_noise_var
from skdip.operators import Convolution, Downsample, PixelMask

KERNEL = make_gaussian_kernel(9, 1.6)
OBSERVED = 0.5  # the share of pixels an inpainting case observes
WARMUP = 100  # ExponentialMovingVariance's and DiscrepancyPrinciple's default
ES_EMV_PATIENCE = 1000  # ExponentialMovingVariance's default
OUT = RESULTS / "discrepancy_operators.jsonl"


def _problem(task: str, name: str, sigma: float):
    clean = PICTURES[name]().astype(np.float64)
    if clean.ndim == 3:
        raise SystemExit("grey pictures only here")
    seen = None
    if task == "inpaint":
        seen = np.random.default_rng(0).random(clean.shape) < OBSERVED
        operator = PixelMask(seen)
        # The network's own output (keep_observed=True would put the noisy pixels back).
        make = lambda **kw: DIPInpainter(keep_observed=False, **kw)  # noqa: E731
    elif task == "deblur":
        operator = Convolution(KERNEL)
        make = lambda **kw: DIPDeconvolver(KERNEL, **kw)  # noqa: E731
    elif task == "superres":
        operator = Downsample(2, kernel=DIPSuperResolver().kernel)
        make = lambda **kw: DIPSuperResolver(scale=2, **kw)  # noqa: E731
    else:
        raise SystemExit(f"unknown task {task!r}: deblur, superres or inpaint")
    with torch.no_grad():
        clean_observed = operator(torch.from_numpy(clean)[None, None])[0, 0].numpy()
    observed = add_gaussian_noise(clean_observed, sigma, random_state=0)
    if seen is not None:
        observed[~seen] = np.nan  # DIPInpainter's missing pixels
    return clean, observed, operator, make, seen


def _observed_psnr(task: str, clean: np.ndarray, observed: np.ndarray) -> float:
    """The observation's PSNR as a picture: upsampled by repeating pixels (superres),
    with the missing pixels at their observed neighbours' mean (inpaint)."""
    if task == "superres":
        observed = np.kron(observed, np.ones((2, 2)))
    elif task == "inpaint":
        observed = np.where(np.isnan(observed), np.nanmean(observed), observed)
    return float(psnr(clean, observed, data_range=1.0))


def _case(text: str) -> tuple[str, str, float]:
    task, name, sigma = text.split(":")
    if name not in PICTURES:
        raise SystemExit(f"unknown picture {name!r}; known: {', '.join(PICTURES)}")
    return task, name, float(sigma)


def record(task: str, name: str, sigma: float, max_iter: int) -> dict:
    clean, observed, operator, make, seen = _problem(task, name, sigma)
    iterates = []

    def keep(it, loss, estimate):
        iterates.append(estimate[0, 0].double().numpy().copy())

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = make(early_stopping="emv", random_state=0, max_iter=max_iter, callback=keep)
        est.fit(observed)
    seconds = time.perf_counter() - start
    returned = np.asarray(est.transform()).reshape(clean.shape)
    best, n = int(est.best_iter_), len(iterates)
    # The fit's scale to the picture's (the identity unless rescale="auto" acted).
    design = np.stack([iterates[best].ravel(), np.ones(returned.size)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, returned.ravel(), rcond=None)
    pictures = [scale * x + offset for x in iterates]
    scores = np.array([psnr(clean, x, data_range=1.0) for x in pictures])
    with torch.no_grad():
        stack = torch.from_numpy(np.stack(pictures))[:, None]
        predicted = operator(stack)[:, 0].numpy()
    noise_var = float(estimate_noise_var(observed[..., None]))  # NaN: missing, left out
    if seen is None:
        seen = np.ones(observed.shape, bool)
    ratio = ((predicted - observed)[:, seen] ** 2).mean(axis=1) / noise_var
    signal = np.asarray(est.history_["signal"])
    reached = np.flatnonzero(ratio[WARMUP:] <= 1.0)
    crossing = WARMUP + int(reached[0]) if reached.size else None
    if crossing is not None and crossing < best + ES_EMV_PATIENCE and crossing < n:
        deadline = WARMUP + int(np.argmin(signal[WARMUP : crossing + 1]))
    else:
        deadline = best
    row = {
        "case": f"{task}:{name}:{sigma}",
        "observed_psnr": _observed_psnr(task, clean, observed),
        "emv": float(psnr(clean, returned, data_range=1.0)),
        "emv_step": best,
        "n_iter": int(est.n_iter_),
        "discrepancy": float(scores[crossing]) if crossing is not None else None,
        "discrepancy_step": crossing,
        "deadline": float(scores[deadline]),
        "deadline_step": deadline,
        "peak": float(scores.max()),
        "peak_step": int(scores.argmax()),
        # The residual over the estimated noise power at the peak, and its lowest.
        "ratio_at_peak": float(ratio[int(scores.argmax())]),
        "lowest_ratio": float(ratio[WARMUP:].min()),
        "estimated_sigma": float(np.sqrt(noise_var)),
        "seconds": round(seconds, 1),
        "warnings": [str(w.message)[:80] for w in caught],
        **thread_counts(),
    }
    print(json.dumps(row))
    return row


def _ratios(row: dict) -> str:
    if "ratio_at_peak" not in row:
        return "not recorded"  # (rows recorded before the script kept them)
    return f"{row['ratio_at_peak']:.2f}, {row['lowest_ratio']:.2f}"


def table() -> str:
    rows = [json.loads(line) for line in OUT.open()]
    lines = [
        "# Residual stopping rules through a forward model (deblurring, upscaling, inpainting)",
        "",
        "Recorded by `python benchmarks/discrepancy_operators.py TASK:PICTURE:SIGMA` (ES-EMV "
        "fits, `max_iter` 2500, seed 0, one thread each; see the script's docstring). PSNR in "
        "dB against the clean 64x64 picture; `@`: step.",
        "",
        "| case | observed | ES-EMV (@) | discrepancy (@) | deadline (@) | peak (@) | ES-EMV ran "
        "| estimated sigma | residual / noise power: at the peak, lowest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        disc = (
            f"{r['discrepancy']:.2f} ({r['discrepancy_step']})"
            if r["discrepancy"] is not None
            else "not reached"
        )
        lines.append(
            f"| {r['case']} | {r['observed_psnr']:.2f} | {r['emv']:.2f} ({r['emv_step']}) "
            f"| {disc} | {r['deadline']:.2f} ({r['deadline_step']}) "
            f"| {r['peak']:.2f} ({r['peak_step']}) | {r['n_iter']} | {r['estimated_sigma']:.4f} "
            f"| {_ratios(r)} |"
        )
    for task in sorted({r["case"].split(":")[0] for r in rows}):
        mine = [r for r in rows if r["case"].startswith(task + ":")]
        disc = [r["discrepancy"] - r["emv"] for r in mine if r["discrepancy"] is not None]
        dead = [r["deadline"] - r["emv"] for r in mine]
        gap = [r["peak"] - r["emv"] for r in mine]
        lines += [
            "",
            f"**{task}** ({len(mine)} cases): discrepancy minus ES-EMV, dB: "
            + (
                f"median {np.median(disc):.2f}, min {min(disc):.2f}, max {max(disc):.2f}, "
                f"higher on {sum(v > 0.05 for v in disc)} and lower on "
                f"{sum(v < -0.05 for v in disc)} of the {len(disc)} where it was reached"
                if disc
                else "never reached"
            )
            + f"; deadline minus ES-EMV: median {np.median(dead):.2f}, min {min(dead):.2f}, "
            f"max {max(dead):.2f}; ES-EMV's gap to the peak: median {np.median(gap):.2f}.",
        ]
    text = "\n".join(lines) + "\n"
    OUT.with_suffix(".md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="TASK:PICTURE:SIGMA")
    parser.add_argument("--max-iter", type=int, default=2500)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for text in args.cases:
        row = record(*_case(text), args.max_iter)
        with OUT.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    if args.table:
        print(table())


if __name__ == "__main__":
    main()
