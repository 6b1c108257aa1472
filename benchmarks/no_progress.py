"""Fits that never learn or whose output saturates: what tells them from the others?

Run by hand (not in CI)::

    python benchmarks/no_progress.py --tag 32 --size 32 --steps 300 --early-stopping none \
        --images camera coins moon flat0.5 flat0.2 flat0.9 --noises 0 0.1 \
        --lrs 0.01 0.3 1 3
    python benchmarks/no_progress.py --tag 64 --size 64 --steps 600 \
        --images camera coins astronaut --noises 0.1 --lrs 0.5 1 2
    python benchmarks/no_progress.py --tag dark --size 32 --steps 300 --noises 0.05 \
        --images "camera*0.25" "coins*0.25" "camera*0.25+0.75" "camera*0.5" \
        --lrs 0.01 0.3 1 3
    python benchmarks/no_progress.py --tag dark_as_given --no-rescale --size 32 \
        --steps 300 --noises 0.05 --lrs 0.01 0.3 1 3 \
        --images "camera*0.25" "coins*0.25" "camera*0.25+0.75" "camera*0.5"

Each case denoises a picture (a grey-level crop of a scikit-image picture, or
``flatV``, a constant image of value V, or ``name*a+b``, the picture squeezed onto
``[b, a + b]``) with ``DIPDenoiser`` at a learning rate from the default to 300
times it (``rescale="auto"``, or ``False`` with ``--no-rescale``), and records
from ``history_["loss"]`` whether the loss ever fell below its first value (the
untrained network's) and at
which step, the median of its last 50 losses over the first, the true PSNR of
the estimate and of the input, the estimate's range, and the ``RuntimeWarning``
messages the fit gave. The engine's no-progress warning
(``skdip._engine._NO_PROGRESS_*``) and its saturation warning
(``_SATURATED_*``) are sized on these records. Results:
``results/no_progress_<tag>.jsonl``, and ``results/no_progress.md`` summarising
every ``no_progress_*.jsonl``.
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


def picture(spec: str, size: int) -> np.ndarray:
    """``name``, ``flatV`` (constant V) or ``name*a+b`` (the picture on [b, a + b])."""
    name, _, affine = spec.partition("*")
    scale, _, offset = affine.partition("+")
    if name.startswith("flat"):
        return np.full((size, size), float(name[4:]))
    image = getattr(data, name)()
    if image.ndim == 3:
        image = image.mean(axis=-1)
    image = resize(image / 255.0, (size, size), anti_aliasing=True)
    return image * float(scale or 1) + float(offset or 0)


def measure(name, noise, generator, lr, size, steps, early_stopping, rescale) -> dict:
    clean = picture(name, size)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + noise * rng.standard_normal(clean.shape), 0, 1)
    params = dict(generator=generator, lr=lr, max_iter=steps, random_state=0, rescale=rescale)
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
        "rescale": rescale,
        "n_iter": int(den.n_iter_),
        "first_loss": float(loss[0]),
        "first_below": int(below[0]) if len(below) else None,
        "ending_over_first": float(np.median(loss[-tail:]) / loss[0]),
        "psnr_input": float(peak_signal_noise_ratio(clean, noisy, data_range=1)),
        "psnr": float(peak_signal_noise_ratio(clean, den.reconstruction_, data_range=1)),
        # The 1st and 99th percentiles, as the engine's saturation warning reads them.
        "estimate_range": [float(np.percentile(den.reconstruction_, q)) for q in (1, 99)],
        "runtime_warnings": [
            str(w.message)[:80] for w in caught if issubclass(w.category, RuntimeWarning)
        ],
    }


def _warning(record: dict) -> str:
    messages = record["runtime_warnings"]
    if any("never fell below" in m for m in messages):
        return "never learned"
    if any("is flat at" in m for m in messages):
        return "saturated"
    return "-"


def _flat_at_a_bound(record: dict, span: float = 0.03) -> bool:
    low, high = record["estimate_range"]
    return high - low < span and (high <= span or low >= 1 - span)


def write_summary() -> str:
    records = []
    for path in sorted(RESULTS.glob("no_progress_*.jsonl")):
        records += read_records(path)[0]
    commands = list(dict.fromkeys(r["command"] for r in records if "command" in r))
    learned = [r for r in records if r["first_below"] is not None]
    never = [r for r in records if r["first_below"] is None]
    lines = [
        "# Fits that never learn, or whose output saturates",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + ". `first below`: the "
        "first step whose loss was under the first step's; `ending`: the median of the last "
        "50 losses over the first; `estimate`: the returned estimate's 1st and 99th "
        "percentiles and true PSNR; "
        "`warned`: the engine's warning in this run's code, 'never learned' (the loss never "
        "fell below its first value) or 'saturated' (the estimate flat at 0 or 1).",
        "",
        "| size | steps | image | noise | rescale | generator | lr | first below | ending "
        "| input dB | estimate | estimate dB | warned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        first = "never" if r["first_below"] is None else r["first_below"]
        input_db = "-" if r["noise"] == 0 else f"{r['psnr_input']:.2f}"
        low, high = r["estimate_range"]
        lines.append(
            f"| {r['size']} | {r['steps']} | {r['image']} | {r['noise']} | {r['rescale']} "
            f"| {r['generator']} | {r['lr']} | {first} | {r['ending_over_first']:.2f} "
            f"| {input_db} | [{low:.3f}, {high:.3f}] | {r['psnr']:.2f} | {_warning(r)} |"
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
        warned = sum(_warning(r) == "never learned" for r in never)
        lines.append(
            f"{len(never)} never did: they ended {min(ratios):.2f} to {max(ratios):.2f} times "
            f"above it, their estimates at {min(dbs):.2f} to {max(dbs):.2f} dB; {warned} of "
            "them warned of as never learned."
        )
    flat = [r for r in records if _flat_at_a_bound(r)]
    if flat:
        spans = [r["estimate_range"][1] - r["estimate_range"][0] for r in flat]
        told = {w: sum(_warning(r) == w for r in flat) for w in ("saturated", "never learned", "-")}
        lines.append(
            f"{len(flat)} estimates were flat at 0 or 1 (98% of their values within 0.03 of "
            f"the bound, spanning {max(spans):.4f} at the most), at "
            f"{min(r['psnr'] for r in flat):.2f} "
            f"to {max(r['psnr'] for r in flat):.2f} dB: warned of as saturated "
            f"{told['saturated']}, as never learned {told['never learned']}, not at all "
            f"{told['-']}."
        )
    others = [r for r in records if not _flat_at_a_bound(r)]
    if others:
        spans = [r["estimate_range"][1] - r["estimate_range"][0] for r in others]
        wrong = sum(_warning(r) == "saturated" for r in others)
        lines.append(
            f"The 98% of the other {len(others)} spanned {min(spans):.3f} at the least; "
            f"{wrong} of them warned of as saturated."
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
    parser.add_argument("--no-rescale", action="store_true", help="fit with rescale=False")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"no_progress_{args.tag}.jsonl"
    for name in args.images:
        for noise in args.noises:
            for generator in args.generators:
                for lr in args.lrs:
                    row = measure(
                        name,
                        noise,
                        generator,
                        lr,
                        args.size,
                        args.steps,
                        args.early_stopping,
                        False if args.no_rescale else "auto",
                    )
                    row["command"] = "python benchmarks/no_progress.py " + " ".join(argv)
                    print(json.dumps(row), flush=True)
                    # Appended as measured: a run cut short keeps what it has.
                    with path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(write_summary())


if __name__ == "__main__":
    main()
