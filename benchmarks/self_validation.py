"""Self-validation against the running-variance rules, on one trajectory per image.

Run by hand (not in CI)::

    python benchmarks/self_validation.py --images camera --tag self_validation_camera
    python benchmarks/self_validation.py --merge self_validation_camera self_validation_astronaut

One denoising fit per image runs ``max_iter`` steps without stopping; every
rule watches the same iterates through the fit's callback, as if it alone
decided, and reports where it would have stopped, the iterate it would have
returned, that iterate's PSNR, and its own cost per step. The peak PSNR of the
run is the oracle.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, merge_saved, run_settings, save, start, where_fits_ran

from skdip import DIPDenoiser, ExponentialMovingVariance, WindowedMovingVariance
from skdip.datasets import add_gaussian_noise, load_image
from skdip.stopping import SelfValidation


def make_rules(windows: list[int]) -> dict:
    """The rules to compare: both variance rules, then self-validation per window."""
    rules = {"ES-EMV (default)": ExponentialMovingVariance(), "ES-WMV": WindowedMovingVariance()}
    for window in windows:
        rules[f"self-validation, window {window}"] = SelfValidation(window=window)
    return rules


class _Watcher:
    """One rule fed the fit's iterates; remembers where it would have stopped."""

    def __init__(self, rule):
        self.rule = rule
        self.rule.start()
        self.stop_iter = None
        self.seconds = 0.0

    def feed(self, it: int, estimate: torch.Tensor) -> None:
        if self.stop_iter is not None:
            return
        t = time.perf_counter()
        signal = self.rule.signal(estimate, it)
        # Read inside the timing: on a GPU that waits for the rule's own work.
        signal = None if signal is None else float(signal)
        self.seconds += time.perf_counter() - t
        if signal is None:
            return
        _, stop = self.rule.observe(signal, it)
        if stop:
            self.stop_iter = it


def run_image(image: str, args) -> list[dict]:
    clean = load_image(image, size=args.size)
    noisy = add_gaussian_noise(clean, 25 / 255, random_state=args.seed)
    watchers = {label: _Watcher(rule) for label, rule in make_rules(args.windows).items()}

    def callback(it, loss, estimate):
        for watcher in watchers.values():
            watcher.feed(it, estimate)

    den = DIPDenoiser(
        generator=args.generator,
        max_iter=args.max_iter,
        early_stopping=None,
        # The rules watch the raw iterates (the callback's estimate when nothing is
        # averaged), and each iterate's PSNR is recorded for the same iterate.
        output_averaging=None,
        callback=callback,
        random_state=args.seed,
        device=args.device,
    )
    t = time.perf_counter()
    den.fit(noisy, y=clean)  # the clean image only records each iterate's PSNR
    wall = time.perf_counter() - t
    curve = [float(v) for v in den.history_["psnr"]]
    fit_step = (wall - sum(w.seconds for w in watchers.values())) / len(curve)
    peak = int(np.argmax(curve))
    rows = []
    for label, w in watchers.items():
        best = int(w.rule.best_iter_)
        rows.append(
            {
                "image": image,
                "rule": label,
                "noisy_psnr": float(10 * np.log10(1 / np.mean((noisy - clean) ** 2))),
                "peak_psnr": curve[peak],
                "peak_iter": peak,
                "returned_psnr": curve[best] if best >= 0 else None,
                "returned_iter": best,
                "stop_iter": w.stop_iter,
                "rule_s_per_step": w.seconds / len(curve),
                "fit_s_per_step": fit_step,
                "command": args.command,
                "settings": _run_settings(args),
            }
        )
    return rows


def _run_settings(args) -> str:
    """The settings of this run's fit, kept in each row: a merged table's header is
    made from its rows, not from the --merge command line (whose defaults it showed)."""
    return (
        f"Machine: {platform.machine()}, {args.threads} torch thread(s) per process, torch "
        f"{torch.__version__}, {where_fits_ran(args)}. `{args.generator}`, "
        f"images {args.size}x{args.size}, "
        f"Gaussian noise sigma 25/255, seed {args.seed}, {args.max_iter} steps"
    )


def write_table(rows: list[dict], path: Path, args) -> None:
    header = (
        "# Self-validation against the running-variance rules (denoising)\n\n"
        f"{args.commands}  \n"
        f"{run_settings(rows)}. No output "
        "averaging (the rules watch the raw iterates), library defaults otherwise. Every "
        "rule watches the same trajectory; 'stops at' is where it would have ended the fit "
        "(- : not within the run), 'returned' the iterate it would "
        "have returned.\n\n"
        "| image | rule | noisy | peak (@) | returned (@) | gap | stops at | rule s/step "
        "| fit s/step |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        returned = r["returned_psnr"]
        gap = "-" if returned is None else f"{r['peak_psnr'] - returned:.2f}"
        shown = "-" if returned is None else f"{returned:.2f}"
        lines.append(
            f"| {r['image']} | {r['rule']} | {r['noisy_psnr']:.2f} | {r['peak_psnr']:.2f} "
            f"({r['peak_iter']}) | {shown} ({r['returned_iter']}) | {gap} | "
            f"{'-' if r['stop_iter'] is None else r['stop_iter']} | "
            f"{r['rule_s_per_step']:.4f} | {r['fit_s_per_step']:.4f} |"
        )
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(
        __doc__.splitlines()[0],
        dict.fromkeys(["camera", "astronaut", "coffee", "chelsea"]),
        tag="self_validation",
        max_iter=2000,
    )
    parser.add_argument(
        "--windows", nargs="+", type=int, default=[32], help="self-validation windows to compare"
    )
    parser.add_argument("--device", default="cpu", help='torch device of the fit, e.g. "cuda"')
    parser.add_argument("--merge", nargs="+", metavar="TAG")
    args = parser.parse_args()
    start(args, "self_validation.py")
    if args.merge:
        merge_saved(args, write_table)
        return
    args.commands = f"Commands: `{args.command}`"
    rows = []
    for image in args.images:
        for row in run_image(image, args):
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
