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
    python benchmarks/no_progress.py --tag inpaint_32 --problem inpaint --size 32 \
        --steps 300 --noises 0.05 --lrs 0.01 0.3 1 3 \
        --images camera coins moon astronaut
    python benchmarks/no_progress.py --tag inpaint_dark_as_given --problem inpaint \
        --no-rescale --size 32 --steps 300 --early-stopping none --noises 0.05 \
        --lrs 0.01 0.3 1 3 \
        --images "camera*0.25" "coins*0.25" "camera*0.25+0.75" "camera*0.5"

and the last two again with ``superres``, ``deconv`` and ``blind`` in place of
``inpaint``.

Each case denoises a picture (or, with ``--problem``, inpaints it with 30% of
its pixels missing and ``keep_observed=False``, upscales it twice from a
low-resolution copy, deconvolves a Gaussian blur of width 1 with the kernel
known, or deblurs it blind, the blur's kernel 5x5): a grey-level crop of a
scikit-image picture, or ``flatV``, a constant
image of value V, or ``name*a+b``, the picture squeezed onto ``[b, a + b]``. The
fit runs at a learning rate from the default to 300 times it (``rescale="auto"``,
or ``False`` with ``--no-rescale``), and each record says from
``history_["loss"]`` whether the loss ever fell below its first value (the
untrained network's) and at which step, the median of its last 50 losses over
the first, the true PSNR of the estimate and of the input (for upscaling, the
data's bicubic enlargement), the estimate's 1st and 99th percentiles and its
shares of values within 0.03 of 0 and of 1, the data's share there (of the
observed pixels, when inpainting), and the ``RuntimeWarning`` messages the fit
gave. The engine's no-progress warning
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
from unittest.mock import patch

import numpy as np
from _common import read_records
from skimage import data
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize

from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPSuperResolver,
    _engine,
)
from skdip.datasets import blur, make_gaussian_kernel

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


# The deconvolution problem's blur: a Gaussian of standard deviation 1 on 5x5 taps.
BLUR = make_gaussian_kernel(5, 1.0)


def problem(kind: str, clean: np.ndarray, noise: float):
    """``(estimator class, its own parameters, data, fit's keywords, the data as an
    image, the clean image the estimate is compared with)`` for ``kind``: the data
    carries Gaussian noise of standard deviation ``noise``, clipped to [0, 1]."""
    rng = np.random.default_rng(0)

    def noisy(image):
        return np.clip(image + noise * rng.standard_normal(image.shape), 0, 1)

    if kind == "denoise":
        data_ = noisy(clean)
        return DIPDenoiser, {}, data_, {}, data_, clean
    if kind == "inpaint":
        # 30% of the pixels missing; the network's estimate itself (not pasted into).
        mask = np.random.default_rng(1).random(clean.shape) > 0.3
        data_ = noisy(clean) * mask
        return DIPInpainter, {"keep_observed": False}, data_, {"mask": mask}, data_, clean
    if kind == "superres":
        data_ = noisy(resize(clean, [n // 2 for n in clean.shape], anti_aliasing=True))
        enlarged = resize(data_, clean.shape, order=3)
        return DIPSuperResolver, {"scale": 2}, data_, {}, enlarged, clean
    if kind == "deconv":
        data_ = noisy(blur(clean, BLUR, mode="wrap"))
        return DIPDeconvolver, {"kernel": BLUR}, data_, {}, data_, clean
    if kind == "blind":
        # The 'valid' blur: the estimate is on the data's grid, the picture's centre.
        data_ = noisy(blur(clean, BLUR))
        return BlindDeblurrer, {"kernel_size": 5}, data_, {}, data_, clean[2:-2, 2:-2]
    raise ValueError(f"unknown problem {kind!r}")


def _network_view(seen: list):
    """Wrap the engine's ``_Selection.result`` so that each fit's outcome is appended
    to ``seen`` as the saturation warning sees it: the network's estimate (on its
    output's [0, 1] scale, a blind deblurrer's without its kernel) and the data's
    ``target_levels`` (its median and share within 0.03 of 0 or 1, where it shows the
    picture's levels)."""
    original = _engine._Selection.result

    def result(self, model, *args, **kwargs):
        outcome = original(self, model, *args, **kwargs)
        image_of = getattr(model, "_image_of", lambda x: x)
        values = image_of(outcome.estimate).double().flatten().numpy()
        levels = getattr(self, "target_levels", None)
        seen.append(
            {
                "network_range": [float(np.percentile(values, q)) for q in (1, 99)],
                "network_at_bounds": _shares_at_bounds(values),
                "network_median": float(np.median(values)),
                "data_median": None if levels is None else levels[0],
                "data_at_bounds": None if levels is None else levels[1],
            }
        )
        return outcome

    return result


def measure(name, noise, generator, lr, size, steps, early_stopping, rescale, kind) -> dict:
    clean = picture(name, size)
    estimator, own, observed, fit_kw, as_image, clean = problem(kind, clean, noise)
    params = dict(generator=generator, lr=lr, max_iter=steps, random_state=0, rescale=rescale)
    if early_stopping == "none":
        params.update(early_stopping=None, output_averaging=None)
    seen: list = []
    with (
        warnings.catch_warnings(record=True) as caught,
        patch.object(_engine._Selection, "result", _network_view(seen)),
    ):
        warnings.simplefilter("always")
        den = estimator(**params, **own).fit(observed, **fit_kw)
    assert len(seen) == 1, "one fit per case"
    loss = np.asarray(den.history_["loss"])
    below = np.flatnonzero(loss < loss[0])
    tail = min(50, len(loss) // 2) or 1
    return {
        "problem": kind,
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
        "psnr_input": float(peak_signal_noise_ratio(clean, np.clip(as_image, 0, 1), data_range=1)),
        "psnr": float(peak_signal_noise_ratio(clean, den.reconstruction_, data_range=1)),
        # The returned estimate's 1st and 99th percentiles (in the data's units), and
        # what the engine's saturation warning judged (see _network_view).
        "estimate_range": [float(np.percentile(den.reconstruction_, q)) for q in (1, 99)],
        **seen[0],
        "runtime_warnings": [
            str(w.message)[:80] for w in caught if issubclass(w.category, RuntimeWarning)
        ],
    }


def _shares_at_bounds(values, span: float = 0.03) -> list[float]:
    values = np.asarray(values, dtype=float)
    return [float(np.mean(values <= span)), float(np.mean(values >= 1 - span))]


def _warning(record: dict) -> str:
    messages = record["runtime_warnings"]
    if any("never fell below" in m for m in messages):
        return "never learned"
    if any("is flat at" in m or "within 0.03 of 0 or 1" in m for m in messages):
        return "saturated"
    return "-"


def _flat_at_a_bound(record: dict, span: float = 0.03) -> bool:
    """The network's estimate's 1st and 99th percentiles within ``span`` of 0 or of 1."""
    low, high = record["network_range"]
    return high - low < span and (high <= span or low >= 1 - span)


def _mostly_at_the_bounds(record: dict, share: float = 0.9) -> bool:
    """Not flat, but ``share`` of the network's estimate within 0.03 of 0 or 1."""
    return not _flat_at_a_bound(record) and sum(record["network_at_bounds"]) >= share


def _told(records: list) -> str:
    told = {w: sum(_warning(r) == w for r in records) for w in ("saturated", "never learned", "-")}
    return (
        f"warned of as saturated {told['saturated']}, as never learned "
        f"{told['never learned']}, not at all {told['-']}"
    )


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
        "percentiles (in the data's units) and true PSNR; `network`: the network's estimate "
        "as the engine's saturation warning judged it (on its output's [0, 1] scale: "
        "`rescale` may have stretched the data), its 1st and 99th percentiles and its "
        "shares within 0.03 of 0 and of 1; `data at 0 or 1`: the share of the data's values "
        "there, on the same scale (the observed pixels, when inpainting); `warned`: the "
        "engine's warning in this run's code, 'never learned' (the loss never fell below its "
        "first value) or 'saturated' (the estimate flat at 0 or 1, or mostly there).",
        "",
        "| problem | size | steps | image | noise | rescale | generator | lr | first below "
        "| ending | input dB | estimate | network | network at 0 / 1 | data at 0 or 1 "
        "| estimate dB | warned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        first = "never" if r["first_below"] is None else r["first_below"]
        input_db = "-" if r["noise"] == 0 else f"{r['psnr_input']:.2f}"
        low, high = r["estimate_range"]
        net_low, net_high = r["network_range"]
        at_low, at_high = r["network_at_bounds"]
        data = "-" if r["data_at_bounds"] is None else f"{r['data_at_bounds']:.2f}"
        lines.append(
            f"| {r['problem']} | {r['size']} | {r['steps']} | {r['image']} | {r['noise']} "
            f"| {r['rescale']} | {r['generator']} | {r['lr']} | {first} "
            f"| {r['ending_over_first']:.2f} | {input_db} | [{low:.3f}, {high:.3f}] "
            f"| [{net_low:.3f}, {net_high:.3f}] | {at_low:.2f} / {at_high:.2f} | {data} "
            f"| {r['psnr']:.2f} | {_warning(r)} |"
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
        spans = [r["network_range"][1] - r["network_range"][0] for r in flat]
        lines.append(
            f"{len(flat)} network estimates were flat at 0 or 1 (98% of their values within "
            f"0.03 of the bound, spanning {max(spans):.4f} at the most), at "
            f"{min(r['psnr'] for r in flat):.2f} to {max(r['psnr'] for r in flat):.2f} dB: "
            f"{_told(flat)}."
        )
    mostly = [r for r in records if _mostly_at_the_bounds(r)]
    if mostly:
        shares = [sum(r["network_at_bounds"]) for r in mostly]
        data = [r["data_at_bounds"] for r in mostly]
        lines.append(
            f"{len(mostly)} others lay mostly within 0.03 of 0 or 1 ({min(shares):.3f} to "
            f"{max(shares):.3f} of their values), at {min(r['psnr'] for r in mostly):.2f} to "
            f"{max(r['psnr'] for r in mostly):.2f} dB, their data {min(data):.3f} to "
            f"{max(data):.3f} there: {_told(mostly)}."
        )
    others = [r for r in records if not _flat_at_a_bound(r) and not _mostly_at_the_bounds(r)]
    if others:
        spans = [r["network_range"][1] - r["network_range"][0] for r in others]
        wrong = sum(_warning(r) == "saturated" for r in others)
        near = [r for r in others if r["psnr"] >= r["psnr_input"] - 3]
        lines.append(
            f"Of the other {len(others)}, the 98% spanned {min(spans):.3f} at the least and "
            f"{max(sum(r['network_at_bounds']) for r in others):.3f} at the most lay within "
            f"0.03 of 0 or 1 ({wrong} warned of as saturated); of the {len(near)} within 3 dB "
            "of their input (or above), "
            f"{max(sum(r['network_at_bounds']) for r in near):.3f} at the most."
        )
    judged = [r["data_at_bounds"] for r in records if r["data_at_bounds"] is not None]
    if judged:
        lines.append(
            f"The data's share within 0.03 of 0 or 1 ranged over {min(judged):.3f} to "
            f"{max(judged):.3f} ({len(records) - len(judged)} fits not judged)."
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
    parser.add_argument(
        "--problem",
        choices=["denoise", "inpaint", "superres", "deconv", "blind"],
        default="denoise",
    )
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
                        args.problem,
                    )
                    row["command"] = "python benchmarks/no_progress.py " + " ".join(argv)
                    print(json.dumps(row), flush=True)
                    # Appended as measured: a run cut short keeps what it has.
                    with path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(write_summary())


if __name__ == "__main__":
    main()
