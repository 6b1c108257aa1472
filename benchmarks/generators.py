"""Generator benchmark: the four network families on Gaussian denoising.

Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/generators.py              # writes benchmarks/results/
    python benchmarks/generators.py --max-iter 300                 # a quick look

Each generator denoises the same image with the default stopping rule
(ES-EMV, patience 1000) and the clean image passed to ``fit`` only to record
the PSNR of every iterate: the table gives the best PSNR over the run (an
oracle), the PSNR of the returned estimate (the variance minimum), the gap,
the cost of a step and the number of trainable parameters. The CPU budget
rules out the full presets "skip" and "conv-decoder" for the quality runs;
they are timed separately over a few steps.
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
from _common import run_settings

from skdip import DIPDenoiser
from skdip.datasets import add_gaussian_noise, load_image
from skdip.generators import ConvDecoder, DeepDecoder, ImplicitNeuralRepresentation, get_generator
from skdip.metrics import psnr

RESULTS = Path(__file__).parent / "results"

# label -> (configuration, reg_noise_std, Adam lr). The INR ignores input noise by
# design, and a SIREN needs a far smaller rate than the convolutional networks: at
# lr 0.01 it never fits the picture (10.9 dB), at 1e-3 it peaks within ~25 steps,
# before the stopping rule's warm-up.
GENERATORS = {
    "skip-small": (lambda: get_generator("skip-small"), 1 / 30, 0.01),
    "deep-decoder": (lambda: get_generator("deep-decoder"), 1 / 30, 0.01),
    "deep-decoder-64x4": (lambda: DeepDecoder(channels=64, n_blocks=4), 1 / 30, 0.01),
    "conv-decoder-64x5": (lambda: ConvDecoder(channels=64, n_layers=5), 1 / 30, 0.01),
    "inr (SIREN 256x3, lr 0.01)": (lambda: ImplicitNeuralRepresentation(), 0.0, 0.01),
    "inr (SIREN 256x3, lr 1e-4)": (lambda: ImplicitNeuralRepresentation(), 0.0, 1e-4),
    "inr-fourier (256x3, lr 1e-3)": (
        lambda: ImplicitNeuralRepresentation(encoding="fourier"),
        0.0,
        1e-3,
    ),
}
TIMED_PRESETS = ["skip", "skip-small", "deep-decoder", "conv-decoder", "inr"]


def run_case(label: str, clean: np.ndarray, noisy: np.ndarray, max_iter: int, seed: int) -> dict:
    factory, reg_noise, lr = GENERATORS[label]
    gen = factory()
    channels = 1 if clean.ndim == 2 else clean.shape[2]
    n_params = gen.build(clean.shape[:2], channels, seed=0).n_parameters()
    den = DIPDenoiser(
        generator=gen,
        lr=lr,
        max_iter=max_iter,
        reg_noise_std=reg_noise,
        random_state=seed,
        device="cpu",
    )
    t = time.perf_counter()
    den.fit(noisy, y=clean)
    wall = time.perf_counter() - t
    hist = den.history_["psnr"]
    detected = psnr(clean, np.clip(den.reconstruction_, 0, 1))
    return {
        "generator": label,
        "lr": lr,
        "params": int(n_params),
        "noisy_psnr": psnr(clean, noisy),
        "peak_psnr": float(hist.max()),
        "peak_iter": int(hist.argmax()),
        "detected_psnr": detected,
        "detected_iter": int(den.best_iter_),
        "gap_db": float(hist.max()) - detected,
        "last_psnr": float(hist[-1]),
        "stopped_by": den.stopped_by_,
        "n_iter": int(den.n_iter_),
        "s_per_step": den.history_["seconds_per_step"],
        "wall_s": wall,
    }


def time_preset(name: str, shape: tuple[int, int], channels: int, n_steps: int) -> dict:
    gen = get_generator(name)
    n_params = gen.build(shape, channels, seed=0).n_parameters()
    noisy = np.random.default_rng(0).random((*shape, channels))
    reg = 0.0 if name == "inr" else 1 / 30
    den = DIPDenoiser(
        generator=gen, max_iter=n_steps, early_stopping=None, reg_noise_std=reg, device="cpu"
    )
    den.fit(noisy)
    return {
        "preset": name,
        "params": int(n_params),
        "size": shape[0],
        "steps": n_steps,
        "s_per_step": den.history_["seconds_per_step"],
    }


def _run_settings(args) -> str:
    """The settings of this run, kept in each record: a table that --merge keeps earlier
    rows in is headed from its records, not from the last run's options alone."""
    return (
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, CPU only (shared, loaded: timings are indicative). "
        f"Image `{args.image}` {args.size}x{args.size}, Gaussian noise sigma 25/255, seed "
        f"{args.seed}, max_iter {args.max_iter}"
    )


def write_table(rows: list[dict], timing: list[dict], path: Path, args) -> None:
    commands = dict.fromkeys(r.get("command") for r in rows + timing)
    header = (
        "# Generator benchmark (denoising)\n\n"
        + "Commands: "
        + "; ".join("an earlier run's (not recorded)" if c is None else f"`{c}`" for c in commands)
        + f"  \n{run_settings(rows + timing)}. Adam (lr in the table), early stopping ES-EMV "
        "(patience 1000, warm-up 100), no output averaging. Smaller configurations than the "
        "full presets, to fit the CPU budget.\n\n"
        "PSNR in dB against the clean image; 'detected' = the estimate returned at the variance "
        "minimum; 'peak' = the best iterate of the run (an oracle); gap = peak - detected.\n\n"
        "| generator | lr | parameters | noisy | peak (@) | detected (@) | gap | last | "
        "stopped by | iters | s/step |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['generator']} | {r.get('lr', 0.01):g} | {r['params']:,} | "
        f"{r['noisy_psnr']:.2f} | {r['peak_psnr']:.2f} "
        f"({r['peak_iter']}) | {r['detected_psnr']:.2f} ({r['detected_iter']}) | "
        f"{r['gap_db']:.2f} | {r['last_psnr']:.2f} | {r['stopped_by']} | {r['n_iter']} | "
        f"{r['s_per_step']:.4f} |"
        for r in rows
    ]
    steps = timing[0].get("steps", args.timing_steps) if timing else 0
    # Kept from an earlier run by --merge --timing-steps 0: its size, and its command
    # where several ran (older records lack the size).
    size = timing[0].get("size") if timing else args.size
    size = f"{size}x{size}" if size else "the size of the run that timed them (not recorded)"
    timed_by = timing[0].get("command") if timing else None
    timed_by = f" by `{timed_by}`" if len(commands) > 1 and timed_by else ""
    timing_table = (
        f"\n\nSeconds per step of the named presets at {size}{timed_by}, "
        f"{steps} steps each (one run, includes the first step's warm-up):\n\n"
        "| preset | parameters | s/step |\n|---|---|---|\n"
        + "\n".join(f"| {t['preset']} | {t['params']:,} | {t['s_per_step']:.4f} |" for t in timing)
    )
    path.write_text(header + "\n".join(lines) + timing_table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--generators",
        nargs="+",
        default=[g for g in GENERATORS if "fourier" not in g],
        choices=GENERATORS,
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing results file for generators not run now",
    )
    parser.add_argument("--max-iter", type=int, default=1500)
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="generators")
    args = parser.parse_args()
    args.command = "python benchmarks/generators.py " + shlex.join(sys.argv[1:])
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    clean = load_image(args.image, size=args.size)
    noisy = add_gaussian_noise(clean, 25 / 255, random_state=args.seed)
    run = {"command": args.command, "settings": _run_settings(args)}
    rows = []
    for label in args.generators:
        row = {**run_case(label, clean, noisy, args.max_iter, args.seed), **run}
        print(json.dumps(row), flush=True)
        rows.append(row)
    channels = 1 if clean.ndim == 2 else clean.shape[2]
    timing = []
    for name in TIMED_PRESETS if args.timing_steps > 0 else []:
        t = {**time_preset(name, clean.shape[:2], channels, args.timing_steps), **run}
        print(json.dumps(t), flush=True)
        timing.append(t)
    path = RESULTS / f"{args.tag}.jsonl"
    if args.merge and path.exists():
        old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        done = {r["generator"] for r in rows}
        old_rows = [r for r in old if "generator" in r and r["generator"] not in done]
        rows = old_rows + rows
        if not timing:
            timing = [r for r in old if "preset" in r]
    order = list(GENERATORS)
    rows.sort(key=lambda r: order.index(r["generator"]) if r["generator"] in order else 99)
    with open(path, "w") as fh:
        for row in rows + timing:
            fh.write(json.dumps(row) + "\n")
    write_table(rows, timing, RESULTS / f"{args.tag}.md", args)


if __name__ == "__main__":
    main()
