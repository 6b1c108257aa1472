"""Fits that never learn: when does a loss that never falls below its first value mean it?

Run by hand (not in CI)::

    python benchmarks/no_progress.py --tag 32 --size 32 --steps 300 --early-stopping none \
        --images camera coins moon flat0.5 flat0.2 flat0.9 --noises 0 0.1 \
        --lrs 0.01 0.3 1 3
    python benchmarks/no_progress.py --tag 64 --size 64 --steps 600 \
        --images camera coins astronaut --noises 0.1 --lrs 0.5 1 2

Each case denoises a picture (a grey-level crop of a scikit-image picture, or
``flatV``, a constant image of value V) with ``DIPDenoiser`` at a learning rate
from the default to 300 times it, and records from ``history_["loss"]`` whether
the loss ever fell below its first value (the untrained network's) and at
which step, the median of its last 50 losses over the first, the true PSNR of
the estimate and of the input, and the ``RuntimeWarning`` messages the fit
gave. The engine's no-progress warning (``skdip._engine._NO_PROGRESS_*``) is
sized on these records. Results: ``results/no_progress_<tag>.jsonl``, and
``results/no_progress.md`` summarising every ``no_progress_*.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from _common import read_records
from skimage import data
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize

from skdip import DIPDenoiser

RESULTS = Path(__file__).parent / "results"


def picture(name: str, size: int) -> np.ndarray:
    if name.startswith("flat"):
        return np.full((size, size), float(name[4:]))
    image = getattr(data, name)()
    if image.ndim == 3:
        image = image.mean(axis=-1)
    return resize(image / 255.0, (size, size), anti_aliasing=True)


def measure(name, noise, generator, lr, size, steps, early_stopping) -> dict:
    clean = picture(name, size)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + noise * rng.standard_normal(clean.shape), 0, 1)
    params = dict(generator=generator, lr=lr, max_iter=steps, random_state=0)
    if early_stopping == "none":
        params.update(early_stopping=None, output_averaging=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        den = DIPDenoiser(**params).fit(noisy)
    loss = np.asarray(den.history_["loss"])
    below = np.flatnonzero(loss < loss[0])
    tail = min(50, len(loss) // 2) or 1
    return {
        "image": name,
        "noise": noise,
        "generator": generator,
        "lr": lr,
        "size": size,
        "steps": steps,
        "early_stopping": early_stopping,
        "n_iter": int(den.n_iter_),
        "first_loss": float(loss[0]),
        "first_below": int(below[0]) if len(below) else None,
        "ending_over_first": float(np.median(loss[-tail:]) / loss[0]),
        "psnr_input": float(peak_signal_noise_ratio(clean, noisy, data_range=1)),
        "psnr": float(peak_signal_noise_ratio(clean, den.reconstruction_, data_range=1)),
        "runtime_warnings": [
            str(w.message)[:80] for w in caught if issubclass(w.category, RuntimeWarning)
        ],
    }


def write_summary() -> str:
    records = []
    for path in sorted(RESULTS.glob("no_progress_*.jsonl")):
        records += read_records(path)[0]
    commands = list(dict.fromkeys(r["command"] for r in records if "command" in r))
    learned = [r for r in records if r["first_below"] is not None]
    never = [r for r in records if r["first_below"] is None]
    lines = [
        "# Fits whose loss never fell below its first value",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + ". `first below`: the "
        "first step whose loss was under the first step's; `ending`: the median of the last "
        "50 losses over the first; `warned`: the no-progress warning in this run's code.",
        "",
        "| size | steps | image | noise | generator | lr | first below | ending | input dB "
        "| estimate dB | warned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        warned = any("never fell below" in m for m in r["runtime_warnings"])
        first = "never" if r["first_below"] is None else r["first_below"]
        input_db = "-" if r["noise"] == 0 else f"{r['psnr_input']:.2f}"
        lines.append(
            f"| {r['size']} | {r['steps']} | {r['image']} | {r['noise']} | {r['generator']} "
            f"| {r['lr']} | {first} | {r['ending_over_first']:.2f} | {input_db} "
            f"| {r['psnr']:.2f} | {'yes' if warned else 'no'} |"
        )
    lines.append("")
    if learned:
        late = max(r["first_below"] for r in learned)
        lines.append(
            f"{len(learned)} of {len(records)} fits fell below their first loss, the latest "
            f"first at step {late}."
        )
    if never:
        ratios = [r["ending_over_first"] for r in never]
        dbs = [r["psnr"] for r in never]
        warned = sum(any("never fell below" in m for m in r["runtime_warnings"]) for r in never)
        lines.append(
            f"{len(never)} never did: they ended {min(ratios):.2f} to {max(ratios):.2f} times "
            f"above it, their estimates at {min(dbs):.2f} to {max(dbs):.2f} dB; {warned} of "
            "them warned of."
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "no_progress.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", nargs="+", default=["camera", "coins", "astronaut"])
    parser.add_argument("--noises", type=float, nargs="+", default=[0.1])
    parser.add_argument("--generators", nargs="+", default=["skip-small", "deep-decoder"])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--early-stopping", choices=["emv", "none"], default="emv")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"no_progress_{args.tag}.jsonl"
    for name in args.images:
        for noise in args.noises:
            for generator in args.generators:
                for lr in args.lrs:
                    row = measure(
                        name, noise, generator, lr, args.size, args.steps, args.early_stopping
                    )
                    row["command"] = "python benchmarks/no_progress.py " + " ".join(argv)
                    print(json.dumps(row), flush=True)
                    # Appended as measured: a run cut short keeps what it has.
                    with path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(write_summary())


if __name__ == "__main__":
    main()
