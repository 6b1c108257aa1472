"""Denoising benchmark: detection quality of the stopping rules, speed, baselines.

Run by hand (not in CI)::

    python benchmarks/denoise.py                      # full grid, writes benchmarks/results/
    # a quick look: one 128x128 case, no 256x256 case, timing at 64x64 only
    python benchmarks/denoise.py --images camera --noises gaussian25 --extra --timing-sizes 64 \
        --max-iter 600

For every (image, noise) case one DIP run is made and four detectors watch the
same trajectory side by side: ES-EMV and ES-WMV on the raw iterates x_t, and
on the exponential average of outputs a_t (weight 0.99). Each reports the PSNR
of the estimate it would return; the peak PSNR over the run (raw and averaged)
is what an oracle stopping at the best step would get. Its average runs from the
first step, as skdip's did until stop 38; ``DIPDenoiser`` now restarts it at the
rule's first check (``benchmarks/output_averaging.py`` compares the two on the
same iterates), so the ``avg +100 after`` columns are the older default's. The scikit-image
denoisers (TV, wavelet, non-local means) and BM3D (optional extra) are run on
the same noisy image. A separate timing part compares the engine's seconds per
step with a bare PyTorch loop over the same network and measures the stopping
rule's own cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import bare_adam_loop, run_settings
from skimage.restoration import (
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
)

from skdip import DIPDenoiser, ExponentialMovingVariance, WindowedMovingVariance
from skdip._engine import DIPModel, fit_model
from skdip.datasets import add_noise, load_image
from skdip.generators import get_generator
from skdip.losses import get_loss
from skdip.metrics import psnr
from skdip.metrics._scorers import _noise_var

RESULTS = Path(__file__).parent / "results"

# name -> (kind, level): Gaussian sigmas 15/25/50 on the 0-255 scale, and the
# middle severity of the early-stopping paper for the other noise types.
NOISES = {
    "gaussian15": ("gaussian", 15 / 255),
    "gaussian25": ("gaussian", 25 / 255),
    "gaussian50": ("gaussian", 50 / 255),
    "poisson12": ("poisson", 12),
    "speckle0.35": ("speckle", 0.35),
    "impulse0.5": ("impulse", 0.5),
}
# name -> (bundled image, size, grey)
IMAGES = {
    "camera": ("camera", 128, True),
    "astronaut": ("astronaut", 128, False),
    "coffee": ("coffee", 128, False),
    "brick": ("brick", 128, True),
    "camera256": ("camera", 256, True),
}


class _Detectors:
    """Four stopping rules and PSNR tracking on one trajectory (as a callback)."""

    def __init__(self, clean: torch.Tensor, averaging: float, patience: int):
        self.clean = clean
        self.w = averaging
        self.avg = None
        self.rules = {
            "emv_raw": ExponentialMovingVariance(patience=patience),
            "wmv_raw": WindowedMovingVariance(patience=patience),
            "emv_avg": ExponentialMovingVariance(patience=patience),
            "wmv_avg": WindowedMovingVariance(patience=patience),
        }
        for rule in self.rules.values():
            rule.start()
        self.best = {k: (-1, float("nan")) for k in self.rules}
        self.stopped = {k: None for k in self.rules}
        self.psnr_raw: list[float] = []
        self.psnr_avg: list[float] = []

    def _psnr(self, x: torch.Tensor) -> float:
        mse = float((x.clamp(0, 1) - self.clean).square().mean())
        return -10 * np.log10(max(mse, 1e-20))

    def __call__(self, it: int, loss: float, x: torch.Tensor) -> bool:
        x = x.detach()
        self.avg = (
            x.clone() if self.avg is None else self.avg.mul_(self.w).add_(x, alpha=1 - self.w)
        )
        p_raw, p_avg = self._psnr(x), self._psnr(self.avg)
        self.psnr_raw.append(p_raw)
        self.psnr_avg.append(p_avg)
        for key, rule in self.rules.items():
            if self.stopped[key] is not None:
                continue
            stream = x if key.endswith("raw") else self.avg
            sig = rule.signal(stream, it)
            if sig is None:
                continue
            is_best, stop = rule.observe(float(sig), it)
            if is_best:
                self.best[key] = (it, p_raw if key.endswith("raw") else p_avg)
            if stop:
                self.stopped[key] = it
        return all(v is not None for v in self.stopped.values())


def _baselines(clean: np.ndarray, noisy: np.ndarray, sigma_true: float | None) -> dict:
    channel_axis = -1 if noisy.ndim == 3 else None
    sigma = sigma_true
    if sigma is None:
        try:
            sigma = float(np.mean(estimate_sigma(noisy, channel_axis=channel_axis)))
        except ImportError:  # no PyWavelets: skdip's estimate, the same without clipping
            grey = noisy if noisy.ndim == 3 else noisy[..., None]
            sigma = float(np.sqrt(_noise_var(grey.astype(np.float64), None, 1.0)))
    out = {}
    t = time.perf_counter()
    tv = denoise_tv_chambolle(noisy, weight=0.1, channel_axis=channel_axis)
    out["tv"] = (psnr(clean, tv), time.perf_counter() - t)
    t = time.perf_counter()
    try:  # scikit-image's wavelet denoiser needs PyWavelets (the benchmarks extra)
        wav = denoise_wavelet(noisy, channel_axis=channel_axis, rescale_sigma=True)
    except ImportError:
        out["wavelet"] = (float("nan"), float("nan"))
    else:
        out["wavelet"] = (psnr(clean, np.clip(wav, 0, 1)), time.perf_counter() - t)
    t = time.perf_counter()
    nlm = denoise_nl_means(
        noisy,
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=channel_axis,
    )
    out["nlm"] = (psnr(clean, nlm), time.perf_counter() - t)
    try:
        import bm3d
    except ImportError:
        out["bm3d"] = (float("nan"), float("nan"))
    else:
        t = time.perf_counter()
        if noisy.ndim == 3:
            est = bm3d.bm3d_rgb(noisy, sigma)
        else:
            est = bm3d.bm3d(noisy, sigma)
        out["bm3d"] = (psnr(clean, np.clip(est, 0, 1)), time.perf_counter() - t)
    return out


def run_case(image_key, noise_key, generator, max_iter, patience, seed=0) -> dict:
    name, size, grey = IMAGES[image_key]
    kind, level = NOISES[noise_key]
    clean = load_image(name, size=size, as_gray=grey)
    noisy = add_noise(clean, kind, level, random_state=seed)
    clean_t = torch.as_tensor(np.atleast_3d(clean).transpose(2, 0, 1)[None], dtype=torch.float32)
    detectors = _Detectors(clean_t, averaging=0.99, patience=patience)
    den = DIPDenoiser(
        generator=generator,
        early_stopping=None,
        max_iter=max_iter,
        callback=detectors,
        random_state=seed,
        device="cpu",
    )
    t = time.perf_counter()
    den.fit(noisy)
    wall = time.perf_counter() - t
    raw, avg = np.asarray(detectors.psnr_raw), np.asarray(detectors.psnr_avg)
    row = {
        "image": image_key,
        "noise": noise_key,
        "generator": generator,
        "noisy": psnr(clean, noisy),
        "peak_raw": float(raw.max()),
        "peak_raw_iter": int(raw.argmax()),
        "peak_avg": float(avg.max()),
        "peak_avg_iter": int(avg.argmax()),
        "n_iter": den.n_iter_,
        "wall_s": wall,
    }
    for key, (it, value) in detectors.best.items():
        row[f"{key}_psnr"] = value
        row[f"{key}_iter"] = it
        row[f"{key}_stop"] = detectors.stopped[key]
    # Detection on the raw iterates, estimate taken from the average: at the
    # detected step, and 1 / (1 - w) = 100 steps later, when the average is
    # made mostly of the iterates right after the variance minimum.
    for key in ("emv_raw", "wmv_raw"):
        it = detectors.best[key][0]
        row[f"avg_at_{key}"] = float(avg[it]) if it >= 0 else float("nan")
        later = min(it + 100, len(avg) - 1)
        row[f"avg_after_{key}"] = float(avg[later]) if it >= 0 else float("nan")
    row["curve_psnr_raw"] = [round(float(v), 3) for v in raw]
    row["curve_psnr_avg"] = [round(float(v), 3) for v in avg]
    sigma_true = level if kind == "gaussian" else None
    for key, (value, seconds) in _baselines(clean, noisy, sigma_true).items():
        row[key] = value
        row[f"{key}_s"] = seconds
    return row


def time_steps(size: int, generator: str, n_steps: int, repeats: int) -> dict:
    """Seconds per step: bare PyTorch loop vs the engine; cost of the EMV rule."""
    torch.manual_seed(0)
    target = torch.rand(1, 3, size, size)

    def build():
        net = get_generator(generator).build((size, size), 3, seed=0)
        return DIPModel(net, None, 1 / 30)

    def bare():
        model = build()
        t = time.perf_counter()
        bare_adam_loop(model, target, n_steps)
        return (time.perf_counter() - t) / n_steps

    def engine():
        model = build()
        rule = ExponentialMovingVariance(patience=10**6, warmup=0)
        t = time.perf_counter()
        fit_model(model, target, loss=get_loss("mse"), max_iter=n_steps, stopping=rule, seed=1)
        return (time.perf_counter() - t) / n_steps

    def rule_cost():
        rule = ExponentialMovingVariance(warmup=0)
        rule.start()
        x = torch.rand(1, 3, size, size)
        t = time.perf_counter()
        for it in range(n_steps * 20):
            sig = rule.signal(x, it)
            if sig is not None:
                rule.observe(float(sig), it)
        return (time.perf_counter() - t) / (n_steps * 20)

    bare_s, engine_s = [], []
    for _ in range(repeats):  # interleaved so load changes hit both alike
        bare_s.append(bare())
        engine_s.append(engine())
    rule_s = rule_cost()
    b, e = float(np.median(bare_s)), float(np.median(engine_s))
    return {
        "size": size,
        "generator": generator,
        "bare_s_per_step": b,
        "engine_s_per_step": e,
        "engine_overhead_pct": 100 * (e - b) / b,
        "emv_s_per_step": rule_s,
        "emv_overhead_pct": 100 * rule_s / b,
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.2f}"
    return str(v)


def write_table(rows: list[dict], timing: list[dict], path: Path, args, header=None) -> None:
    cols = [
        ("image", "image"),
        ("noise", "noise"),
        ("noisy", "noisy"),
        ("peak_raw", "raw peak"),
        ("peak_raw_iter", "@"),
        ("emv_raw_psnr", "EMV raw"),
        ("emv_raw_iter", "@"),
        ("wmv_raw_psnr", "WMV raw"),
        ("wmv_raw_iter", "@"),
        ("peak_avg", "avg peak"),
        ("peak_avg_iter", "@"),
        ("emv_avg_psnr", "EMV avg"),
        ("emv_avg_iter", "@"),
        ("wmv_avg_psnr", "WMV avg"),
        ("wmv_avg_iter", "@"),
        ("avg_at_emv_raw", "avg at EMV raw"),
        ("avg_after_emv_raw", "avg +100 after EMV raw"),
        ("avg_after_wmv_raw", "avg +100 after WMV raw"),
        ("n_iter", "iters"),
        ("wall_s", "DIP s"),
        ("tv", "TV"),
        ("wavelet", "wavelet"),
        ("nlm", "NLM"),
        ("bm3d", "BM3D"),
    ]
    lines = [
        "# Denoising benchmark",
        "",
        header or f"Command: `{args.command}`  \n{_run_settings(args)}.",
        "",
        "PSNR in dB against the clean image. 'raw' = the iterate x_t, 'avg' = exponential "
        "average of outputs (weight 0.99). '@' = iteration. Detectors run on one trajectory.",
        "",
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k, _ in cols) + " |")
    if rows:
        lines += ["", "## Summary (median over cases)", ""]
        summary = _summary(rows)
        for k, v in summary.items():
            lines.append(f"- {k}: {v:.2f}")
    if timing:
        lines += [
            "",
            "## Seconds per step",
            "",
            "| size | generator | bare loop s/step | engine s/step | engine overhead % "
            "| EMV s/step | EMV overhead % |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in timing:
            lines.append(
                f"| {t['size']} | {t['generator']} | {t['bare_s_per_step']:.4f} | "
                f"{t['engine_s_per_step']:.4f} | {t['engine_overhead_pct']:.1f} | "
                f"{t['emv_s_per_step']:.6f} | {t['emv_overhead_pct']:.2f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def _still_rising(row: dict) -> bool:
    """The run ended while PSNR was still rising: no stopping rule can be judged."""
    return row["peak_raw_iter"] >= 0.95 * row["n_iter"]


def _summary(rows: list[dict]) -> dict:
    out = {}
    skipped = [f"{r['image']}:{r['noise']}" for r in rows if _still_rising(r)]
    rows = [r for r in rows if not _still_rising(r)]
    if skipped:
        out[f"cases left out of the medians (PSNR still rising at the end): {skipped}"] = len(
            skipped
        )
    variants = [
        "emv_raw_psnr",
        "wmv_raw_psnr",
        "emv_avg_psnr",
        "wmv_avg_psnr",
        "avg_at_emv_raw",
        "avg_after_emv_raw",
        "avg_after_wmv_raw",
    ]
    for key in variants:
        have = [r for r in rows if key in r and np.isfinite(r[key])]
        if not have:
            continue
        gap = [r["peak_raw"] - r[key] for r in have]
        above = sum(g < 0 for g in gap)
        out[
            f"{key}: best raw iterate minus it, dB, median over {len(gap)} cases "
            f"({above} above the best raw iterate)"
        ] = float(np.median(gap))
    out["averaged output's peak minus raw peak, dB (median)"] = float(
        np.median([r["peak_avg"] - r["peak_raw"] for r in rows])
    )
    both = [r for r in rows if "avg_after_emv_raw" in r]
    if both:
        diff = [r["emv_avg_psnr"] - r["avg_after_emv_raw"] for r in both]
        out[
            f"EMV on the average minus average after EMV raw, dB, median over {len(both)} "
            f"cases (min {min(diff):.2f}, max {max(diff):.2f})"
        ] = float(np.median(diff))
    return out


def _run_settings(args) -> str:
    """The settings of this run, kept in each record (with its command): the header
    of a merged table is made from its records."""
    return (
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU only. "
        f"Generator: `{args.generator}`, max_iter {args.max_iter}, patience {args.patience}, "
        "seed 0"
    )


# The files the description below was written for, from before records kept their
# command and settings. It named every merged file: a later run's rows, made otherwise,
# were headed with it too.
DESCRIBED = (
    "denoise_run2_a",
    "denoise_run2_b",
    "denoise_run3_256",
    "denoise_skip-small_a",
    "denoise_skip-small_b",
    "denoise_timing",
    "denoise_timing64",
    "denoise_timing_small",
)
DESCRIPTION = (
    "Quality runs: `--generator skip-small --max-iter 4000 --threads 1`, two processes "
    "in parallel on a "
    "2-core machine shared with other jobs (wall times indicative); the camera256 case ran "
    "alone with 2 threads and `--max-iter 3000`. Timing rows: default `skip` generator (and "
    "one `skip-small`), 2 threads, quiet machine; the first three with 15 steps, the next "
    "two with 60 (fixed start-up costs weigh less). Patience 1000, seed 0."
)


def merge(tag: str = "denoise") -> None:
    """Combine every results/denoise_*.jsonl into results/{tag}.md."""
    rows, timing, recorded, described, unknown = [], [], [], [], []
    # The described files first, so that the description's "first three" stays true.
    paths = sorted(RESULTS.glob("denoise_*.jsonl"), key=lambda p: (p.stem not in DESCRIBED, p))
    for path in paths:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            if "timing" in record:
                timing.append(record["timing"])
            else:
                record["run"] = path.stem
                rows.append(record)
        if all("command" in r for r in records):
            recorded += records
        else:
            (described if path.stem in DESCRIBED else unknown).append(path.name)
    parts = ["Merged from results/denoise_*.jsonl (`python benchmarks/denoise.py --merge`)."]
    if described and not recorded and not unknown:
        parts.append(DESCRIPTION)
    elif described:
        parts.append(f"{', '.join(described)}: {DESCRIPTION}")
    if recorded:
        commands = dict.fromkeys(r["command"] for r in recorded)
        parts.append(
            ("Other commands: " if described or unknown else "Commands: ")
            + "; ".join(f"`{c}`" for c in commands)
            + f"  \n{run_settings(recorded)}."
        )
    if unknown:
        parts.append(f"{', '.join(unknown)}: commands and settings not recorded.")
    args = argparse.Namespace(generator="skip-small", max_iter=4000, patience=1000)
    write_table(rows, timing, RESULTS / f"{tag}.md", args, header=" ".join(parts))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="*", default=[k for k in IMAGES if k != "camera256"])
    parser.add_argument("--noises", nargs="*", default=list(NOISES))
    parser.add_argument(
        "--extra",
        nargs="*",
        default=["camera256:gaussian25"],
        help="extra image:noise cases (e.g. the 256x256 one)",
    )
    parser.add_argument("--generator", default="skip")
    parser.add_argument("--max-iter", type=int, default=3000)
    parser.add_argument("--patience", type=int, default=1000)
    parser.add_argument("--timing-sizes", nargs="*", type=int, default=[64, 128, 256])
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument(
        "--cases",
        nargs="*",
        default=None,
        help="explicit image:noise cases (replaces --images/--noises/--extra)",
    )
    parser.add_argument("--tag", default="denoise")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="only combine the committed results into results/denoise.md",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/denoise.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        merge()
        return

    RESULTS.mkdir(exist_ok=True)
    if args.cases is not None:
        cases = [tuple(c.split(":")) for c in args.cases]
    else:
        cases = [(i, n) for i in args.images for n in args.noises]
        cases += [tuple(c.split(":")) for c in args.extra]
    rows = []
    jsonl = RESULTS / f"{args.tag}.jsonl"
    table = RESULTS / f"{args.tag}.md"
    run = {"command": args.command, "settings": _run_settings(args)}
    timing = [time_steps(s, args.generator, args.timing_steps, 3) for s in args.timing_sizes]
    for t in timing:
        print(json.dumps(t), flush=True)
    write_table(rows, timing, table, args)
    with jsonl.open("w") as fh:
        for t in timing:
            fh.write(json.dumps({"timing": t, **run}) + "\n")
        for image_key, noise_key in cases:
            row = run_case(image_key, noise_key, args.generator, args.max_iter, args.patience)
            row.update(run)
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(
                json.dumps({k: v for k, v in row.items() if not k.startswith("curve")}), flush=True
            )
            write_table(rows, timing, table, args)


if __name__ == "__main__":
    main()
