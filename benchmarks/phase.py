"""Fourier phase retrieval benchmark: PhaseRetriever (DIP) against hybrid input-output.

Run by hand (not in CI), one thread::

    OMP_NUM_THREADS=1 python benchmarks/phase.py                 # writes benchmarks/results/
    OMP_NUM_THREADS=1 python benchmarks/phase.py --images camera --photons 1e6 --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/phase.py --size 32 --beamstop 1 --tag phase_32_beamstop

Each case: a bundled grey image (the object, real and non-negative, in
[0, 1]) is measured with :func:`skdip.datasets.simulate_diffraction`
(oversampling 2, magnitudes, optionally Poisson noise with a total photon
count), and reconstructed by

- ``HIO``: ``HIOPhaseRetriever()`` (1000 iterations, the last 100 error
  reduction, beta 0.9, one random start);
- ``HIO best-of-4``: the same with ``n_init=4``, the restart with the lowest
  Fourier error kept (the start PhaseRetriever uses by default);
- ``PhaseRetriever``: default ``init="hio"`` (pretraining on HIO best-of-4),
  the "skip-small" generator, ES-EMV early stopping;
- ``PhaseRetriever best-of-K``, with ``--n-init K`` (K > 1): the same with
  ``n_init=K``, the restart with the lowest training loss kept.

Scores are ambiguity-aware (translation, conjugate flip, global sign):
:func:`skdip.metrics.phase_retrieval_psnr` and
:func:`skdip.metrics.phase_retrieval_error`; a case is a *success* when the
aligned relative error is below ``--success`` (0.15 by default: no visible
twin image or ghosting).

``--beamstop r`` hides the ``(2r + 1)**2`` pixels around the zero frequency
of every pattern, as a beamstop does: marked as NaN (not measured, the
default) or, with ``--fill zero``, given as 0 (read as measured darkness), to
show what marking them is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import settings_differences

from skdip import ExponentialMovingVariance, HIOPhaseRetriever, PhaseRetriever
from skdip.datasets import load_image, simulate_diffraction
from skdip.metrics import phase_retrieval_error, phase_retrieval_psnr

RESULTS = Path(__file__).parent / "results"
# Exact recoveries (round-off error only) would dominate a mean of PSNRs.
PSNR_CAP = 60.0


def _photons(text: str) -> float | None:
    return None if text.lower() in ("none", "inf", "clean") else float(text)


def _label(photons: float | None) -> str:
    return "noise-free" if photons is None else f"{photons:.0e} photons"


def _methods(args, seed: int) -> dict:
    def dip(n_init: int) -> PhaseRetriever:
        return PhaseRetriever(
            generator=args.generator,
            max_iter=args.max_iter,
            n_init=n_init,
            early_stopping=ExponentialMovingVariance(patience=args.patience),
            random_state=seed,
            device="cpu",
        )

    methods = {
        "HIO": HIOPhaseRetriever(random_state=seed),
        "HIO best-of-4": HIOPhaseRetriever(n_init=4, random_state=seed),
        "PhaseRetriever": dip(1),
    }
    if args.n_init > 1:
        methods[f"PhaseRetriever best-of-{args.n_init}"] = dip(args.n_init)
    return methods


def _settings(args) -> dict:
    """What every row of a results file must share: the table has one header for them."""
    return {
        "size": args.size,
        "generator": args.generator,
        "max_iter": args.max_iter,
        "patience": args.patience,
        "success_below": args.success,
        "beamstop": args.beamstop,
        "fill": args.fill if args.beamstop else None,
    }


def _check_resume(rows: list[dict], settings: dict, jsonl: Path) -> None:
    """Refuse to add this run's rows to records made with other settings."""
    # Records made before the settings were kept have only the size.
    differ = settings_differences(rows, settings)
    if differ:
        raise SystemExit(
            f"--resume: the records in {jsonl} were made with other settings than this "
            f"run's ({'; '.join(differ)}). Run with the same settings, or without --resume, "
            "or give another --tag."
        )


def run(args) -> list[dict]:
    rows = []
    jsonl = RESULTS / f"{args.tag}.jsonl"
    done = set()
    if args.resume and jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            rows.append(r)
            done.add((r["image"], r["photons"], r["seed"], r["method"]))
        if rows:
            _check_resume(rows, _settings(args), jsonl)
    elif jsonl.exists():
        jsonl.unlink()
    for name in args.images:
        x = load_image(name, size=args.size, as_gray=True)
        for photons in args.photons:
            for seed in args.seeds:
                y = simulate_diffraction(x, oversampling=2, photons=photons, random_state=seed)
                if args.beamstop:
                    # numpy's layout: the zero frequency at [0, 0], its neighbours wrap.
                    near = np.r_[-args.beamstop : args.beamstop + 1]
                    y[np.ix_(near, near)] = np.nan if args.fill == "nan" else 0.0
                for method, est in _methods(args, seed).items():
                    if (name, photons, seed, method) in done:
                        continue
                    start = time.perf_counter()
                    rec = est.fit(y).reconstruction_
                    seconds = time.perf_counter() - start
                    err = phase_retrieval_error(x, rec)
                    row = {
                        "image": name,
                        **_settings(args),
                        "command": args.command,
                        "photons": photons,
                        "seed": seed,
                        "method": method,
                        "psnr": round(phase_retrieval_psnr(x, rec), 3),
                        "rel_error": round(err, 4),
                        "success": bool(err < args.success),
                        "fourier_error": round(float(est.fourier_error_), 5),
                        "seconds": round(seconds, 2),
                        "n_iter": int(est.n_iter_),
                    }
                    if isinstance(est, PhaseRetriever):
                        row["best_iter"] = int(est.best_iter_)
                        row["stopped_by"] = est.stopped_by_
                    rows.append(row)
                    with jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    return rows


def _commands(rows: list[dict]) -> str:
    """The commands that made ``rows``, once each (records from before commands were
    kept are said to be so)."""
    commands = list(dict.fromkeys(f"`{r['command']}`" for r in rows if r.get("command")))
    if any(not r.get("command") for r in rows):
        commands.append("earlier rows: command not recorded")
    return "Commands: " + "; ".join(commands) + "."


def summarise(rows: list[dict], args) -> str:
    # The methods of the rows, in the order they are run.
    methods = list(dict.fromkeys(r["method"] for r in rows))
    levels = list(dict.fromkeys(r["photons"] for r in rows))
    # The images and seeds of the rows: a resumed run may have added to another's.
    images = list(dict.fromkeys(r["image"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"# Fourier phase retrieval, {args.size}x{args.size} objects, oversampling 2",
        "",
        f"Images {', '.join(images)}; seeds {', '.join(map(str, seeds))} (the seed "
        "drives the Poisson noise and the method's random start). PhaseRetriever: generator "
        f"{args.generator!r}, max_iter {args.max_iter}, ES-EMV patience {args.patience}, "
        "init='hio' (HIO best-of-4, 200 pretraining steps). "
        f"Success: aligned relative error < {args.success}. PSNR and error are aligned over "
        "translation, conjugate flip and global sign; PSNRs are capped at "
        f"{PSNR_CAP:.0f} dB (exact recovery) before averaging. "
        f"Machine: {platform.processor() or platform.machine()}, 1 torch thread, "
        "CPU shared with other jobs (times are indicative)."
        + (
            f" Beamstop: the {(2 * args.beamstop + 1) ** 2} pixels around the zero frequency "
            + ("not measured (NaN)." if args.fill == "nan" else "given as 0 (as if measured).")
            if args.beamstop
            else ""
        ),
        "",
        _commands(rows),
        "",
        "| noise | method | success | aligned PSNR (dB) | worst run (dB) | rel. error | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        for m in methods:
            sel = [r for r in rows if r["photons"] == level and r["method"] == m]
            if not sel:
                continue
            lines.append(
                f"| {_label(level)} | {m} | {sum(r['success'] for r in sel)}/{len(sel)} | "
                f"{np.mean([min(r['psnr'], PSNR_CAP) for r in sel]):.2f} | "
                f"{min(r['psnr'] for r in sel):.2f} | "
                f"{np.mean([r['rel_error'] for r in sel]):.3f} | "
                f"{np.mean([r['seconds'] for r in sel]):.1f} |"
            )
    lines += ["", "Per image (mean over seeds, aligned PSNR in dB):", ""]
    lines += [
        "| image | noise | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for name in images:
        for level in levels:
            cells = []
            for m in methods:
                sel = [
                    r["psnr"]
                    for r in rows
                    if r["image"] == name and r["photons"] == level and r["method"] == m
                ]
                cells.append(f"{np.mean(np.minimum(sel, PSNR_CAP)):.2f}" if sel else "")
            lines.append(f"| {name} | {_label(level)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["camera", "coins", "shepp_logan_phantom"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--photons", nargs="+", type=_photons, default=[None, 1e6, 1e5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--generator", default="skip-small")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=300)
    parser.add_argument("--success", type=float, default=0.15)
    parser.add_argument("--beamstop", type=int, default=0, help="radius of a hidden centre")
    parser.add_argument("--fill", choices=["nan", "zero"], default="nan")
    parser.add_argument(
        "--n-init", type=int, default=1, help="K > 1 adds PhaseRetriever with n_init=K"
    )
    parser.add_argument("--tag", default="phase_64")
    parser.add_argument("--resume", action="store_true", help="keep the rows already written")
    args = parser.parse_args()
    args.command = shlex.join(["python", "benchmarks/phase.py", *sys.argv[1:]])
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    RESULTS.mkdir(exist_ok=True)
    rows = run(args)
    (RESULTS / f"{args.tag}.md").write_text(summarise(rows, args))
    print(summarise(rows, args))


if __name__ == "__main__":
    main()
