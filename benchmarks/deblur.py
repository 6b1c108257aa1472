"""Blind deblurring benchmark: BlindDeblurrer against SelfDeblur-style and non-blind references.

Run by hand (not in CI)::

    python benchmarks/deblur.py                     # the full grid, writes benchmarks/results/
    python benchmarks/deblur.py --images camera --noises 0.05 --families motion --max-iter 300

Each case blurs a sharp crop of a bundled grey picture with a known kernel ('valid'
convolution, so the observation is exactly ``size x size`` and no boundary is assumed) and
adds white Gaussian noise. Rows:

- ``BlindDeblurrer, size unknown``: the defaults (``kernel_size=None``: over-specified, 17x17
  for a 64x64 observation), GradientRatio regularizer, ES-EMV early stopping;
- ``BlindDeblurrer, exact size``: the same with the true kernel size;
- ``SelfDeblur-style``: exact size, no regularizer, nearly uniform first kernel, no early
  stopping (the last iterate);
- ``Richardson-Lucy`` and ``Wiener`` (scikit-image) given the TRUE kernel, their one
  parameter (iterations / balance) picked per case with the clean image (an oracle upper
  reference, not a competitor);
- the blurry input itself.

Scores: PSNR and SSIM after the best integer alignment within +-``max_shift`` pixels and a
border crop of the same width (``skdip.metrics.aligned_psnr`` / ``aligned_ssim``), the kernel
error up to shift (``skdip.metrics.kernel_error``) and the wall time. Every case is appended to
``results/<tag>.jsonl`` as it finishes, with the settings that made it (``--resume`` skips
cases already there, and refuses records made with other settings); the markdown table
averages over images.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import settings_differences
from skimage.restoration import richardson_lucy, wiener

from skdip import BlindDeblurrer, ExponentialMovingVariance
from skdip.datasets import (
    add_gaussian_noise,
    blur,
    load_image,
    make_disk_kernel,
    make_gaussian_kernel,
    make_motion_kernel,
)
from skdip.metrics import aligned_psnr, aligned_ssim, kernel_error

RESULTS = Path(__file__).parent / "results"

METHODS = {
    "unknown": "BlindDeblurrer, size unknown",
    "exact": "BlindDeblurrer, exact size",
    "selfdeblur": "SelfDeblur-style (exact size, no regularizer, uniform init, no ES)",
    "rl": "Richardson-Lucy, true kernel (oracle iterations)",
    "wiener": "Wiener, true kernel (oracle balance)",
    "blurry": "blurry input",
}
DIP_METHODS = ("unknown", "exact", "selfdeblur")
# What the table's header describes: every row must share them.
SETTINGS = ("size", "generator", "max_iter", "patience", "max_shift", "seed", "threads")


def make_kernel(family: str, index: int) -> np.ndarray:
    """The blur of one case: a seeded camera shake, or a Gaussian / defocus disk."""
    if family == "motion":
        # Shakes drawn in a 13x13 window: paths of about 9 to 13 pixels.
        return make_motion_kernel(13, random_state=index)
    if family == "gaussian":
        return make_gaussian_kernel(11, 1.6)
    if family == "disk":
        return make_disk_kernel(9, 4.0)
    raise ValueError(f"unknown kernel family {family!r}")


def make_case(image: str, family: str, noise: float, size: int, index: int):
    kernel = make_kernel(family, index)
    kh = kernel.shape[0]
    full = load_image(image, size=2 * size, as_gray=True)
    extent = size + kh - 1
    top = (full.shape[0] - extent) // 2
    sharp = full[top : top + extent, top : top + extent]
    blurry = blur(sharp, kernel, mode="valid")
    if noise > 0:
        blurry = add_gaussian_noise(blurry, noise, random_state=1000 + index)
    # The sharp image on the observation's grid (the kernel is centred).
    c = kh // 2
    truth = sharp[c : c + size, c : c + size]
    return truth, blurry, kernel


def dip(method: str, kernel: np.ndarray, args) -> BlindDeblurrer:
    common = dict(
        generator=args.generator,
        max_iter=args.max_iter,
        random_state=args.seed,
        device="cpu",
    )
    if method == "unknown":
        return BlindDeblurrer(
            early_stopping=ExponentialMovingVariance(patience=args.patience), **common
        )
    if method == "exact":
        return BlindDeblurrer(
            kernel_size=kernel.shape[0],
            early_stopping=ExponentialMovingVariance(patience=args.patience),
            **common,
        )
    return BlindDeblurrer(
        kernel_size=kernel.shape[0],
        regularizer=None,
        kernel_init="uniform",
        early_stopping=None,
        **common,
    )


def run_method(method, truth, blurry, kernel, args) -> dict:
    score = dict(max_shift=args.max_shift)
    start = time.perf_counter()
    extra: dict = {}
    if method in DIP_METHODS:
        deb = dip(method, kernel, args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate = deb.fit_transform(blurry)
        k_est = deb.kernel_
        extra = {
            "n_iter": int(deb.n_iter_),
            "best_iter": int(deb.best_iter_),
            "stopped_by": deb.stopped_by_,
            "kernel_shape": list(k_est.shape),
        }
    elif method in ("rl", "wiener"):
        observed = np.clip(blurry, 0, 1)
        grid = (10, 30, 100) if method == "rl" else (1e-3, 1e-2, 1e-1, 1.0)
        best = None
        for value in grid:
            if method == "rl":
                out = richardson_lucy(observed, kernel, num_iter=value)
            else:
                out = wiener(observed, kernel, balance=value)
            p = aligned_psnr(truth, out, **score)
            if best is None or p > best[0]:
                best = (p, out, value)
        estimate, k_est = best[1], kernel
        extra = {"parameter": best[2]}
    else:
        estimate, k_est = blurry, np.ones((1, 1))  # "no blur": the delta kernel
    elapsed = time.perf_counter() - start
    return {
        "psnr": aligned_psnr(truth, estimate, **score),
        "ssim": aligned_ssim(truth, estimate, **score),
        "kernel_error": kernel_error(kernel, k_est),
        "time": elapsed,
        **extra,
    }


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def records_settings(rows: list[dict], jsonl: Path, settings: Path) -> dict:
    """The settings the rows were made with: refused when unknown or not one set."""
    if not rows:
        raise SystemExit(f"no records in {jsonl}")
    unknown = [k for k in SETTINGS if any(k not in r for r in rows)]
    if unknown:
        raise SystemExit(
            f"{jsonl}: records made before the rows kept their settings, and no "
            f"{settings.name} says with which {', '.join(unknown)} they were made. If you know "
            f"them, write that file (a JSON object with the keys {', '.join(SETTINGS)}; "
            "command and note optional), then rerun."
        )
    mixed = {k: sorted({repr(r[k]) for r in rows}) for k in SETTINGS}
    mixed = {k: v for k, v in mixed.items() if len(v) > 1}
    if mixed:
        raise SystemExit(
            f"{jsonl}: records made with different settings ("
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items())
            + "): one table header cannot describe them."
        )
    return {k: rows[0][k] for k in SETTINGS}


def write_table(rows: list[dict], args, path: Path) -> None:
    noises = sorted({r["noise"] for r in rows})
    # Every family in the rows: a --resume run over some families keeps the others.
    found = {r["family"] for r in rows}
    families = [f for f in args.families if f in found] + sorted(found - set(args.families))
    columns = [(n, f) for n in noises for f in families]
    images = sorted({r["image"] for r in rows})

    def mean(method, noise, family, key):
        vals = [
            r[key]
            for r in rows
            if r["method"] == method and r["noise"] == noise and r["family"] == family
        ]
        return (float(np.mean(vals)), len(vals)) if vals else (float("nan"), 0)

    lines = [
        f"# Blind deblurring benchmark ({args.tag})",
        "",
        f"{args.size}x{args.size} grey crops of {', '.join(images)} (centre crop of the picture "
        f"resized to {2 * args.size}px), 'valid' blur, white Gaussian noise of the given standard "
        "deviation (intensities in [0, 1]). Kernels: "
        + "; ".join(
            {
                "motion": "motion = seeded camera shake in a 13x13 window "
                "(`make_motion_kernel(13, random_state=i)`)",
                "gaussian": "gaussian = `make_gaussian_kernel(11, 1.6)`",
                "disk": "disk = `make_disk_kernel(9, 4.0)`",
            }[f]
            for f in families
        )
        + ".",
        f"DIP rows: generator `{args.generator}`, at most {args.max_iter} iterations, ES-EMV "
        f"patience {args.patience}, random_state={args.seed} (ONE seed), CPU with "
        f"{args.threads} torch thread(s) on a shared, loaded 2-core machine (times are "
        "indicative only). SelfDeblur-style uses the same learning rates and iteration budget "
        "(SelfDeblur itself runs 5000 iterations with kernel lr 1e-4).",
        f"Scores: PSNR (dB) / SSIM after the best integer shift within +-{args.max_shift} px and "
        f"a {args.max_shift} px border crop; kernel error = relative l2 error up to shift "
        "(the blurry input row: error of the no-blur delta kernel); time in seconds. "
        "Mean over images.",
        "",
    ]
    for title, key, fmt in (
        ("Aligned PSNR (dB)", "psnr", "{:.2f}"),
        ("Aligned SSIM", "ssim", "{:.3f}"),
        ("Kernel error (lower is better)", "kernel_error", "{:.3f}"),
        ("Time (s)", "time", "{:.1f}"),
    ):
        lines += [f"## {title}", ""]
        head = "| method | " + " | ".join(f"noise {n:g}, {f}" for n, f in columns) + " |"
        lines += [head, "|---" * (len(columns) + 1) + "|"]
        for method, label in METHODS.items():
            cells = []
            for n, f in columns:
                value, count = mean(method, n, f, key)
                if method in ("rl", "wiener") and key == "kernel_error":
                    cells.append("(true kernel)")
                elif count == 0:
                    cells.append("-")
                else:
                    cells.append(
                        fmt.format(value) + ("" if count == len(images) else f" (n={count})")
                    )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Targets", ""]
    lines.append(
        "Mean over images, then each image. Over-specification: unknown - exact, target >= -0.5 "
        "dB; at 5% noise: unknown - SelfDeblur-style, target >= 1 dB."
    )
    lines.append("")
    lines.append(
        "| noise, kernels | images | unknown - exact (dB) | unknown - SelfDeblur-style (dB) |"
    )
    lines.append("|---|---|---|---|")

    def psnr_of(method, n, f, image=None):
        vals = [
            r["psnr"]
            for r in rows
            if r["method"] == method
            and r["noise"] == n
            and r["family"] == f
            and (image is None or r["image"] == image)
        ]
        return float(np.mean(vals)) if vals else float("nan")

    for n, f in columns:
        for image in [None, *images]:
            u, e, s = (psnr_of(m, n, f, image) for m in ("unknown", "exact", "selfdeblur"))
            gap, win = u - e, u - s
            flag_gap = "met" if gap >= -0.5 else "MISSED"
            flag_win = (" (" + ("met" if win >= 1.0 else "MISSED") + ")") if n >= 0.05 else ""
            label = "mean" if image is None else image
            lines.append(
                f"| {n:g}, {f} | {label} | {gap:+.2f} ({flag_gap}) | {win:+.2f}{flag_win} |"
            )
    if args.note:
        lines += ["", args.note]
    # The commands that made the rows (a resumed run adds its own), else this one.
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    commands = commands or [args.command]
    lines += [
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}. Command{'s' if len(commands) > 1 else ''}: "
        + "; ".join(f"`{c}`" for c in commands)
        + ".",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["camera", "coins"])
    parser.add_argument("--families", nargs="+", default=["motion", "gaussian"])
    parser.add_argument("--noises", nargs="+", type=float, default=[0.0, 0.01, 0.05])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--generator", default="skip-small")
    parser.add_argument("--max-iter", type=int, default=600)
    parser.add_argument("--patience", type=int, default=200)
    parser.add_argument("--max-shift", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="deblur")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the markdown from the jsonl"
    )
    parser.add_argument(
        "--note",
        default=None,
        help="a line appended to the markdown (kept with the settings: later runs and "
        "--table-only reuse it unless given another)",
    )
    args = parser.parse_args(argv)
    import sys

    given = list(argv if argv is not None else sys.argv[1:])
    if "--note" in given:  # the note is printed on its own, not in the command
        k = given.index("--note")
        del given[k : k + 2]
    args.command = "python benchmarks/deblur.py " + shlex.join(given)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    jsonl = RESULTS / f"{args.tag}.jsonl"
    settings = RESULTS / f"{args.tag}.settings.json"
    earlier = args.resume or args.table_only  # the records already there are kept
    rows = load_rows(jsonl) if earlier else []
    saved = json.loads(settings.read_text()) if earlier and settings.exists() else {}
    for row in rows:  # rows from before they kept their settings: the run's record
        for key in (*SETTINGS, "command"):
            if key not in row and key in saved:
                row[key] = saved[key]
    if args.note is None:
        args.note = saved.get("note", "")
    if args.table_only:
        # The header describes the run that made the rows, not this command line.
        vars(args).update(records_settings(rows, jsonl, settings))
        if args.note != saved.get("note", ""):  # a new note: later rebuilds keep it
            settings.write_text(json.dumps({**saved, "note": args.note}) + "\n")
        write_table(rows, args, RESULTS / f"{args.tag}.md")
        return
    if rows:  # --resume: this run's rows join the table only if made the same way
        records_settings(rows, jsonl, settings)  # known, and one set
        differ = settings_differences(rows, {k: getattr(args, k) for k in SETTINGS})
        if differ:
            raise SystemExit(
                f"--resume: the records in {jsonl} were made with other settings "
                f"({'; '.join(differ)}). Run with theirs, or give another --tag."
            )
    else:
        jsonl.write_text("")
    # The run's settings and the table's note; a resumed run keeps the first run's record.
    record = saved if rows and saved else {k: getattr(args, k) for k in (*SETTINGS, "command")}
    if args.note or "note" in record:
        record = {**record, "note": args.note}
    if record != saved:
        settings.write_text(json.dumps(record) + "\n")
    done = {(r["image"], r["family"], r["noise"], r["method"]) for r in rows}
    for noise in args.noises:
        for family in args.families:
            for index, image in enumerate(args.images):
                truth, blurry, kernel = make_case(image, family, noise, args.size, index)
                for method in args.methods:
                    key = (image, family, noise, method)
                    if key in done:
                        continue
                    row = {"image": image, "family": family, "noise": noise, "method": method}
                    row.update(run_method(method, truth, blurry, kernel, args))
                    # Each row says how it was made: --table-only reads its header from them.
                    row.update({k: getattr(args, k) for k in SETTINGS}, command=args.command)
                    rows.append(row)
                    with jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(
                        f"{image:8s} {family:8s} noise {noise:<5g} {method:10s} "
                        f"psnr {row['psnr']:6.2f} ssim {row['ssim']:.3f} "
                        f"kerr {row['kernel_error']:.3f} {row['time']:6.1f}s",
                        flush=True,
                    )
                write_table(rows, args, RESULTS / f"{args.tag}.md")
    write_table(rows, args, RESULTS / f"{args.tag}.md")


if __name__ == "__main__":
    main()
