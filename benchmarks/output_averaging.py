"""Which output average should a denoising fit return after the raw-variance minimum?

``DIPDenoiser``'s default watches the raw iterates with ES-EMV and returns the
exponential average of outputs (weight ``w = 0.99``) ``round(1 / (1 - w)) = 100``
steps after their variance minimum. This benchmark records every raw iterate of
that default fit (``output_averaging=None`` gives the same trajectory and the same
minimum: the average takes no part in the optimisation) on 64x64 crops of bundled
pictures (and two whole pictures at 128x128) with white Gaussian noise, and then
scores, on the same iterates, the estimates each way of averaging would return:

- ``raw``: the raw iterate at the minimum (``output_averaging=None``);
- ``from_start``: the plain average from the first iterate,
  ``a_t = w a_{t-1} + (1 - w) x_t``, 100 steps after the minimum (skdip up to
  stop 38);
- ``restart``: the plain average started afresh at the rule's first check (the
  end of its warm-up), 100 steps after the minimum;
- ``restart_normalised``: the same with its weights normalised over the
  iterates it holds, ``a_t = sum_k (1 - w) w^(t-k) x_k / (1 - w^n)`` (skdip now);
- ``from_minimum``: normalised, started at the minimum itself;
- ``restart_normalised+50/150/200`` and ``from_start+150/200``: other delays;
- ``raw peak``, ``average peak``: the best raw iterate and the best plain
  average of the run (oracles, read every 5 steps);
- ``discrepancy``, ``discrepancy_raw`` (``skdip.stopping.DiscrepancyPrinciple``):
  Morozov's discrepancy principle instead of ES-EMV: the first step from the
  rule's first check at which the raw iterate's mean squared residual to the
  observation falls to the noise power that skdip's no-reference estimator
  (``skdip.metrics._noise_level.estimate_noise_var``, the ``"discrepancy"``
  scorer's) reads from the observation; ``discrepancy_raw`` is that iterate,
  ``discrepancy`` the normalised average 100 steps later (``discrepancy_step``:
  where it was taken; the fit could end there).
- ``deadline`` (``skdip.stopping.NoiseLevelDeadline()``): ES-EMV, but at that first
  step at the noise level (unless ES-EMV has stopped before) its minimum so far is
  kept and the normalised average 100 steps after it returned (``deadline_step``:
  where the fit ends).

``--check`` fits the library's ``DIPDenoiser`` on recorded cases and reports the
PSNR it returns beside the one the recording predicts: equal, when the library does
what this script scores. ``--check-rule`` says which rule: ``emv`` (the default,
against ``restart_normalised``), ``discrepancy`` (``DiscrepancyPrinciple()``, against
``discrepancy``) or ``deadline`` (``NoiseLevelDeadline()``, against ``deadline``).

Every recorded fit is kept as ``<cache>/<image>_<sigma>.npz`` (float16 iterates,
about 10 MB each, not committed); ``--analyse`` writes
``results/output_averaging.jsonl`` and ``.md``. Slow on a CPU: 2 to 3 minutes a
fit on one thread. Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/output_averaging.py --record moon:0.05 camera:0.1
    python benchmarks/output_averaging.py --analyse
    OMP_NUM_THREADS=1 python benchmarks/output_averaging.py --check moon:0.05
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, thread_counts
from skimage import data
from skimage.color import rgb2gray
from skimage.transform import resize
from skimage.util import img_as_float

from skdip import DIPDenoiser, DiscrepancyPrinciple, NoiseLevelDeadline
from skdip.datasets import add_gaussian_noise
from skdip.metrics import psnr
from skdip.metrics._noise_level import estimate_noise_var

W = 0.99
DELAY = round(1 / (1 - W))
ES_EMV_PATIENCE = 1000  # ExponentialMovingVariance's default, the recorded fits'


def _grey(a: np.ndarray) -> np.ndarray:
    a = img_as_float(a)
    return rgb2gray(a) if a.ndim == 3 else a


# Pictures bundled with scikit-image (no download needed): 64x64 windows, and two
# whole pictures at 128x128.
PICTURES = {
    "camera": lambda: _grey(data.camera())[100:164, 200:264],
    "moon": lambda: _grey(data.moon())[200:264, 200:264],
    "coins": lambda: _grey(data.coins())[100:164, 100:164],
    "text": lambda: _grey(data.text())[40:104, 100:164],
    "brick": lambda: _grey(data.brick())[100:164, 100:164],
    "grass": lambda: _grey(data.grass())[100:164, 100:164],
    "astronaut": lambda: _grey(data.astronaut())[100:164, 200:264],
    "chelsea": lambda: _grey(data.chelsea())[100:164, 150:214],
    "coffee": lambda: _grey(data.coffee())[150:214, 200:264],
    "page": lambda: _grey(data.page())[50:114, 100:164],
    "astronautRGB": lambda: img_as_float(data.astronaut())[100:164, 200:264],
    "coffeeRGB": lambda: img_as_float(data.coffee())[150:214, 200:264],
    # Whole pictures brought to 128x128 (anti-aliased), for a larger scale.
    "camera128": lambda: resize(_grey(data.camera()), (128, 128), anti_aliasing=True),
    "coffee128RGB": lambda: resize(img_as_float(data.coffee()), (128, 128), anti_aliasing=True),
}


def _case(text: str) -> tuple[str, float]:
    name, sigma = text.split(":")
    if name not in PICTURES:
        raise SystemExit(f"unknown picture {name!r}; known: {', '.join(PICTURES)}")
    return name, float(sigma)


def _problem(name: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    clean = PICTURES[name]().astype(np.float32)
    noisy = add_gaussian_noise(clean, sigma, random_state=0).astype(np.float32)
    return clean, noisy


def record(name: str, sigma: float, cache: Path, max_iter: int) -> None:
    clean, noisy = _problem(name, sigma)
    iterates = []

    def keep(it, loss, estimate):
        iterates.append(estimate.squeeze(0).numpy().astype(np.float16))

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # ES-EMV alone, whatever the default, which the analysis reads every rule from.
        den = DIPDenoiser(
            early_stopping="emv",
            output_averaging=None,
            random_state=0,
            max_iter=max_iter,
            callback=keep,
        ).fit(noisy)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache / f"{name}_{sigma}.npz",
        iterates=np.stack(iterates),
        signal=np.asarray(den.history_["signal"]),
        clean=clean,
        noisy=noisy,
        ret=np.asarray(den.transform(noisy)),
        best_iter=den.best_iter_,
        n_iter=den.n_iter_,
        stopped_by=den.stopped_by_,
        warns=np.asarray([str(w.message)[:200] for w in caught]),
    )
    print(name, sigma, den.best_iter_, den.n_iter_, round(time.perf_counter() - start, 1))


def _as_picture(image: np.ndarray, shape: tuple) -> np.ndarray:
    """A recorded ``(C, H, W)`` iterate in the picture's own layout."""
    return np.moveaxis(image, 0, -1).reshape(shape)


def _average(iterates: np.ndarray, start: int, stop: int, normalised: bool) -> np.ndarray:
    """The average of ``iterates[start:stop + 1]`` as the engine would hold it at ``stop``."""
    avg, n = None, 0
    for x in iterates[start : stop + 1]:
        n += 1
        if avg is None:
            avg = x.astype(np.float64)
        else:
            b = (1 - W) / (1 - W**n) if normalised else 1 - W
            avg = avg + b * (x - avg)
    return avg


def analyse_one(path: Path) -> dict:
    z = np.load(path)
    iterates = z["iterates"].astype(np.float32)  # (steps, C, H, W), the fit's own scale
    clean = z["clean"]
    best, n = int(z["best_iter"]), len(iterates)
    first_check = int(np.flatnonzero(np.isfinite(z["signal"]))[0])
    # The fit's scale to the picture's: the identity unless rescale="auto" acted.
    returned = z["ret"].reshape(clean.shape).ravel()
    at_best = _as_picture(iterates[best], clean.shape).ravel()
    design = np.stack([at_best, np.ones(returned.size)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, returned, rcond=None)

    def score(image: np.ndarray) -> float:
        picture = _as_picture(image, clean.shape)
        return float(psnr(clean, scale * picture + offset, data_range=1.0))

    def at(delay: int) -> int:
        return min(best + delay, n - 1)

    row = {
        "case": path.stem,
        "minimum": best,
        "first_check": first_check,
        "n_iter": int(z["n_iter"]),
        "noisy": float(psnr(clean, z["noisy"], data_range=1.0)),
        "raw": score(iterates[best]),
        "from_start": score(_average(iterates, 0, at(DELAY), False)),
        "restart": score(_average(iterates, first_check, at(DELAY), False)),
        "restart_normalised": score(_average(iterates, first_check, at(DELAY), True)),
        "from_minimum": score(_average(iterates, best, at(DELAY), True)),
    }
    for delay in (50, 150, 200):
        row[f"restart_normalised+{delay}"] = score(_average(iterates, first_check, at(delay), True))
    for delay in (150, 200):
        row[f"from_start+{delay}"] = score(_average(iterates, 0, at(delay), False))
    # The discrepancy principle, read from the same iterates (see the docstring).
    noisy = z["noisy"]
    noise_var = estimate_noise_var(noisy if noisy.ndim == 3 else noisy[..., None])
    observed = np.moveaxis(noisy, -1, 0) if noisy.ndim == 3 else noisy[None]
    residual = ((iterates[first_check:] - observed) ** 2).mean(axis=(1, 2, 3))
    reached = np.flatnonzero(residual <= noise_var)
    crossing = first_check + int(reached[0]) if reached.size else n - 1
    row["discrepancy_raw"] = score(iterates[crossing])
    taken = min(crossing + DELAY, n - 1)
    row["discrepancy"] = score(_average(iterates, first_check, taken, True))
    row["discrepancy_step"] = taken
    row["estimated_sigma"] = float(np.sqrt(noise_var))
    # The noise-level deadline on ES-EMV (skdip.stopping.NoiseLevelDeadline): at the
    # crossing, ES-EMV's minimum so far is kept, unless ES-EMV had stopped already.
    signal = z["signal"]
    if reached.size and crossing < best + ES_EMV_PATIENCE:
        chosen = first_check + int(np.argmin(signal[first_check : crossing + 1]))
        row["deadline_step"] = max(crossing, chosen + DELAY)
    else:
        chosen, row["deadline_step"] = best, int(z["n_iter"]) - 1
    row["deadline"] = score(_average(iterates, first_check, min(chosen + DELAY, n - 1), True))
    avg, peaks = None, {"raw peak": -np.inf, "average peak": -np.inf}
    for t, x in enumerate(iterates):
        avg = x.astype(np.float64) if avg is None else W * avg + (1 - W) * x
        if t % 5 == 0:
            peaks["raw peak"] = max(peaks["raw peak"], score(x))
            peaks["average peak"] = max(peaks["average peak"], score(avg))
    row.update(peaks)
    row["warnings"] = [str(w)[:80] for w in z["warns"]]
    return row


SCHEMES = [
    "raw",
    "from_start",
    "restart",
    "restart_normalised",
    "from_minimum",
    "restart_normalised+50",
    "restart_normalised+150",
    "restart_normalised+200",
    "from_start+150",
    "from_start+200",
    "discrepancy_raw",
    "discrepancy",
    "deadline",
]


def write_table(rows: list[dict], path: Path, command: str) -> None:
    cols = [
        "case",
        "noisy",
        "first_check",
        "minimum",
        *SCHEMES,
        "discrepancy_step",
        "raw peak",
        "average peak",
    ]
    lines = [
        "# Output averaging after the raw-variance minimum (DIPDenoiser defaults)",
        "",
        f"Command: `{command}`. Iterates recorded by `--record` (defaults: `skip`, ES-EMV "
        "alpha 0.1, warm-up 100, patience 1000; `max_iter` 2500; seed 0; noise seed 0; "
        "pictures in float32, see `PICTURES`), CPU, one thread per fit. PSNR in dB against "
        "the clean picture. See the script's docstring for the schemes.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Against `from_start` (the previous default), dB, over {len(rows)} cases", ""]
    lines.append("| scheme | median gain | min gain | max gain | median gap to average peak |")
    lines.append("|---|---|---|---|---|")
    for s in SCHEMES:
        gain = [r[s] - r["from_start"] for r in rows]
        gap = [r["average peak"] - r[s] for r in rows]
        lines.append(
            f"| {s} | {np.median(gain):.2f} | {min(gain):.2f} | {max(gain):.2f} "
            f"| {np.median(gap):.2f} |"
        )
    lead = [r["discrepancy"] - r["restart_normalised"] for r in rows]
    lines += [
        "",
        "## The discrepancy principle against the default (DiscrepancyPrinciple)",
        "",
        f"`discrepancy` minus `restart_normalised`, dB: median {np.median(lead):.2f}, "
        f"min {min(lead):.2f}, max {max(lead):.2f}; higher on {sum(v > 0 for v in lead)} of "
        f"{len(rows)} cases. Steps: the default ran {int(np.median([r['n_iter'] for r in rows]))} "
        "(median; the minimum plus the patience of 1000, or `max_iter`), the discrepancy "
        f"estimate is taken at step {int(np.median([r['discrepancy_step'] for r in rows]))} "
        "(median).",
    ]
    lead = [r["deadline"] - r["restart_normalised"] for r in rows]
    lines += [
        "",
        "## ES-EMV with the noise-level deadline against ES-EMV alone (NoiseLevelDeadline)",
        "",
        f"`deadline` minus `restart_normalised`, dB: median {np.median(lead):.2f}, "
        f"min {min(lead):.2f}, max {max(lead):.2f}; higher by more than 0.05 dB on "
        f"{sum(v > 0.05 for v in lead)}, lower by more than 0.05 dB on "
        f"{sum(v < -0.05 for v in lead)} of {len(rows)} cases. Steps: the fit runs "
        f"{int(np.median([r['deadline_step'] + 1 for r in rows]))} (median) against "
        f"{int(np.median([r['n_iter'] for r in rows]))} for ES-EMV alone.",
    ]
    checks = path.with_name(path.stem + "_check.jsonl")
    if checks.exists():
        lines += [
            "",
            "## The library's default against the recording (`--check`)",
            "",
            "PSNR returned by `DIPDenoiser(random_state=0, max_iter=2500)` (rule `emv`, the "
            "default), with `early_stopping=DiscrepancyPrinciple()` (rule `discrepancy`) or "
            "`NoiseLevelDeadline()` (rule `deadline`), and the one `restart_normalised`, "
            "`discrepancy` or `deadline` predicts from the recorded iterates.",
            "",
            "| case | rule | returned | predicted | best_iter_ | n_iter_ | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in map(json.loads, checks.open()):
            lines.append(
                f"| {r['case']} | {r.get('rule', 'emv')} | {r['returned']:.3f} "
                f"| {r['predicted']:.3f} | {r['best_iter']} | {r.get('n_iter', '')} "
                f"| {r['seconds']} |"
            )
    path.write_text("\n".join(lines) + "\n")


def check(name: str, sigma: float, cache: Path, rule: str) -> dict:
    """Fit the library's default (``rule="emv"``) or the default with
    ``DiscrepancyPrinciple()`` or ``NoiseLevelDeadline()`` and compare with the
    prediction from the recording."""
    path = cache / f"{name}_{sigma}.npz"
    scheme = {"emv": "restart_normalised", "discrepancy": "discrepancy", "deadline": "deadline"}
    predicted = analyse_one(path)[scheme[rule]] if path.exists() else float("nan")
    clean, noisy = _problem(name, sigma)
    stopping = {
        "emv": "emv",
        "discrepancy": DiscrepancyPrinciple(),
        "deadline": NoiseLevelDeadline(),
    }
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        den = DIPDenoiser(early_stopping=stopping[rule], random_state=0, max_iter=2500)
        den.fit(noisy)
    got = float(psnr(clean, den.transform(noisy), data_range=1.0))
    row = {
        "case": f"{name}_{sigma}",
        "rule": rule,
        "n_iter": den.n_iter_,
        "returned": round(got, 3),
        "predicted": round(predicted, 3),
        "best_iter": den.best_iter_,
        "seconds": round(time.perf_counter() - start, 1),
        **thread_counts(),
    }
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", nargs="*", default=[], metavar="PICTURE:SIGMA")
    parser.add_argument("--check", nargs="*", default=[], metavar="PICTURE:SIGMA")
    parser.add_argument("--check-rule", choices=("emv", "discrepancy", "deadline"), default="emv")
    parser.add_argument("--analyse", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/skdip_output_averaging"))
    parser.add_argument("--max-iter", type=int, default=2500)
    parser.add_argument("--tag", default="output_averaging")
    args = parser.parse_args()
    for text in args.record:
        record(*_case(text), args.cache, args.max_iter)
    for text in args.check:
        with open(RESULTS / f"{args.tag}_check.jsonl", "a") as fh:
            fh.write(json.dumps(check(*_case(text), args.cache, args.check_rule)) + "\n")
    if args.analyse:
        rows = [analyse_one(p) for p in sorted(args.cache.glob("*.npz"))]
        if not rows:
            raise SystemExit(f"nothing recorded in {args.cache}: run --record first")
        with open(RESULTS / f"{args.tag}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        command = "python benchmarks/output_averaging.py " + shlex.join(sys.argv[1:])
        write_table(rows, RESULTS / f"{args.tag}.md", command)
        print((RESULTS / f"{args.tag}.md").read_text())


if __name__ == "__main__":
    main()
