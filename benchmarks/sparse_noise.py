"""Sparse (impulse) noise benchmark: double over-parameterisation against the l1 loss.

Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/sparse_noise.py            # writes benchmarks/results/
    python benchmarks/sparse_noise.py --images camera --lrs 0.01 0.03 0.1   # a rate sweep

Salt-and-pepper noise (a fraction ``amount`` of the values set to 0 or 1) is
removed by the plain DIP with an l1 data loss, and by the sparse noise model
``y = G(z) + g * g - h * h`` with the MSE loss (``noise_model=SparseNoise(lr)``).
Both use the default stopping rule (ES-EMV); the clean image passed to ``fit``
only records the PSNR of every iterate. A 3x3 median filter is the classical
reference.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, save, start
from scipy.ndimage import median_filter

from skdip import DIPReconstructor, SparseNoise
from skdip.datasets import add_impulse_noise, load_image
from skdip.metrics import psnr

IMAGES = {
    "camera": ("camera", True),
    "astronaut": ("astronaut", False),
    "coffee": ("coffee", False),
}


def _median(noisy: np.ndarray) -> np.ndarray:
    size = (3, 3) if noisy.ndim == 2 else (3, 3, 1)
    return median_filter(noisy, size=size, mode="reflect")


def run_method(method, lr, clean, noisy, generator, max_iter, seed) -> dict:
    if method == "l1":
        est = DIPReconstructor(
            loss="l1", generator=generator, max_iter=max_iter, random_state=seed, device="cpu"
        )
    else:
        est = DIPReconstructor(
            loss="mse",
            noise_model=SparseNoise(lr=lr),
            generator=generator,
            max_iter=max_iter,
            random_state=seed,
            device="cpu",
        )
    t = time.perf_counter()
    est.fit(noisy, y=clean)
    wall = time.perf_counter() - t
    hist = est.history_["psnr"]
    returned = psnr(clean, np.clip(est.reconstruction_, 0, 1))
    row = {
        "method": method if method == "l1" else f"sparse lr={lr:g}",
        "returned_psnr": returned,
        "returned_iter": int(est.best_iter_),
        "stopped_by": est.stopped_by_,
        "peak_psnr": float(hist.max()),
        "peak_iter": int(hist.argmax()),
        "last_psnr": float(hist[-1]),
        "n_iter": int(est.n_iter_),
        "wall_s": wall,
    }
    if method == "sparse":
        s = np.asarray(est.sparse_noise_).reshape(np.shape(noisy))
        truth = noisy - clean
        row["noise_corr"] = float(np.corrcoef(s.ravel(), truth.ravel())[0, 1])
    return row


def write_table(rows: list[dict], path: Path, args) -> None:
    header = (
        "# Sparse (impulse) noise benchmark\n\n"
        f"Command: `{args.command}`  \n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, CPU only (shared). Generator `{args.generator}`, "
        f"max_iter {args.max_iter}, ES-EMV (patience 1000), seed {args.seed}; "
        f"{args.size}x{args.size} images (small, to fit the CPU budget); salt-and-pepper "
        f"amount {args.amount}.\n\n"
        "PSNR in dB against the clean image. 'returned' = the estimate chosen by the stopping "
        "rule; 'peak' = the best iterate of the run (an oracle); 'last' = the last iterate. "
        "'noise corr' = correlation of the fitted sparse component with the true corruption.\n\n"
        "| image | noisy | median 3x3 | method | returned (@) | peak (@) | last | stopped by | "
        "iters | noise corr | s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['image']} | {r['noisy_psnr']:.2f} | {r['median_psnr']:.2f} | {r['method']} | "
        f"{r['returned_psnr']:.2f} ({r['returned_iter']}) | {r['peak_psnr']:.2f} "
        f"({r['peak_iter']}) | {r['last_psnr']:.2f} | {r['stopped_by']} | {r['n_iter']} | "
        f"{r['noise_corr']:.3f} | {r['wall_s']:.0f} |".replace("| nan |", "| - |")
        for r in rows
    ]
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(__doc__.splitlines()[0], IMAGES, tag="sparse_noise", max_iter=1500)
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.03])
    args = parser.parse_args()
    start(args, "sparse_noise.py")
    rows = []
    for image in args.images:
        name, grey = IMAGES[image]
        clean = load_image(name, size=args.size, as_gray=grey)
        noisy = add_impulse_noise(clean, args.amount, random_state=args.seed)
        common = {
            "image": image,
            "noisy_psnr": psnr(clean, noisy),
            "median_psnr": psnr(clean, _median(noisy)),
            "noise_corr": float("nan"),
        }
        methods = [("l1", None)] + [("sparse", lr) for lr in args.lrs]
        for method, lr in methods:
            row = {
                **common,
                **run_method(method, lr, clean, noisy, args.generator, args.max_iter, args.seed),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
