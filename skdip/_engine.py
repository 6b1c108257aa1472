"""The single fitting loop behind every skdip estimator.

It solves ``min_theta loss(y, f(G_theta(z))) + lambda * R(G_theta(z))`` by Adam
for one observation ``y``. What varies between estimators (which networks,
which forward model, how many parameter groups) lives in the *model*: a
``torch.nn.Module`` whose ``forward(rng)`` returns ``(estimate, prediction)``,
the current image estimate and the predicted measurement ``f(estimate)``.
Everything else is here, once: stopping, output averaging, the divergence
guard, progress, callbacks, reference tracking and interruption.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import clone
from torch import nn
from tqdm.auto import tqdm

from .operators import ForwardOperator, Identity
from .stopping import BaseStoppingRule, ExponentialMovingVariance

__all__ = ["DIPModel", "FitResult", "fit_model", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else the CPU."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available")
    return dev


class DIPModel(nn.Module):
    """The plain reparametrisation ``x = G(z + noise)``, prediction ``f(x)``.

    Parameters
    ----------
    network : GeneratorNetwork
        The built generator; its ``input`` buffer is the fixed code ``z``.
    operator : ForwardOperator, optional
        The forward model ``f``; identity when None.
    input_noise_std : float
        Standard deviation of the Gaussian perturbation added to ``z`` at each
        step (0 disables it).
    """

    def __init__(
        self,
        network: nn.Module,
        operator: ForwardOperator | None = None,
        input_noise_std: float = 0.0,
    ):
        super().__init__()
        self.network = network
        self.operator = operator if operator is not None else Identity()
        self.input_noise_std = float(input_noise_std)

    def forward(self, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.network.input
        if rng is not None and self.input_noise_std > 0:
            noise = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
            z = z + self.input_noise_std * noise
        x = self.network(z)
        return x, self.operator(x)


@dataclass
class FitResult:
    """What one fit produced. Tensors are on the CPU, shaped ``(1, C, H, W)``."""

    estimate: torch.Tensor
    last: torch.Tensor
    best_iter: int
    n_iter: int
    stopped_by: str  # "early_stopping", "max_iter", "callback", "interrupted", "divergence"
    history: dict = field(default_factory=dict)
    model: nn.Module | None = None


def _psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    mse = (x.clamp(0, 1) - reference).square().mean()
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return params, copy.deepcopy(optimizer.state_dict())


def fit_model(
    model: nn.Module,
    target: torch.Tensor,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
    lr: float = 0.01,
    param_groups: list[dict] | None = None,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stopping: BaseStoppingRule | None = None,
    averaging: float | None = None,
    averaging_monitor: str = "average",
    callback: Callable | None = None,
    verbose: bool = False,
    reference: torch.Tensor | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    divergence_ratio: float = 10**0.5,
    max_divergences: int = 10,
    monitor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    description: str = "fit",
) -> FitResult:
    """Fit ``model`` to ``target`` with Adam and return the selected estimate.

    Parameters
    ----------
    model : nn.Module
        ``model(rng) -> (estimate, prediction)``, already on the target device.
    target : Tensor
        The observation, on the model's device, shaped like the prediction.
    loss : callable
        ``loss(prediction, target) -> scalar``.
    max_iter : int
        Maximum number of Adam steps.
    lr : float
        Learning rate of every parameter group that does not set its own.
    param_groups : list of dict, optional
        Adam parameter groups; default: every parameter of ``model`` at ``lr``.
    regularizer : callable, optional
        ``regularizer(estimate) -> scalar`` added to the loss.
    stopping : BaseStoppingRule, optional
        Cloned, then fed the monitored estimate each step. None runs
        ``max_iter`` steps and returns the last estimate (an exponential
        moving variance is still recorded in the history, for scoring).
    averaging : float, optional
        Weight ``w`` of the exponential average of outputs
        ``a_t = w a_{t-1} + (1 - w) x_t``. When given, the average is the
        estimate the stopping rule watches and the one returned.
    callback : callable, optional
        ``callback(iteration, loss, estimate)`` after each step; returning
        True stops the fit (the best estimate so far is kept).
    verbose : bool
        Show a progress bar with the loss and the stopping signal.
    reference : Tensor, optional
        Clean image; when given the PSNR of each iterate is recorded (never
        used to fit or to stop).
    seed : int
        Seed of the input perturbations.
    checkpoint_every : int
        Steps between snapshots of the parameters for the divergence guard.
    divergence_ratio : float
        A loss above ``divergence_ratio`` times the lowest loss so far, or a
        non-finite loss, counts as divergence: the last snapshot is restored
        and the learning rates are halved.
    max_divergences : int
        After this many divergences the fit ends with the best estimate.
    monitor : callable, optional
        Maps the estimate to the tensor the stopping rule watches (default:
        the estimate itself), for models whose estimate is not a plain image.
    description : str
        Label of the progress bar.
    """
    device = target.device
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.Adam(param_groups, lr=lr)
    rng = torch.Generator(device=device)
    rng.manual_seed(int(seed))
    # Without a stopping rule an EMV still watches, passively, so that the
    # running variance of the returned (last) iterate is recorded for scoring.
    passive = stopping is None
    rule = clone(stopping) if stopping is not None else ExponentialMovingVariance(warmup=0)
    rule.start()
    monitor = monitor if monitor is not None else (lambda t: t)

    losses: list[float] = []
    signals: list[float] = []
    psnrs: list[float] = []
    psnrs_raw: list[float] = []
    events: list[dict] = []
    if averaging_monitor not in ("average", "raw"):
        raise ValueError(f"averaging_monitor must be 'average' or 'raw', got {averaging_monitor!r}")
    watch_raw = averaging is not None and averaging_monitor == "raw"
    delay = round(1.0 / (1.0 - averaging)) if watch_raw else 0
    capture_at = None
    first_checked = detected = None
    average = None
    best = last = None
    best_iter = -1
    stopped_by = "max_iter"
    snapshot = _snapshot(model, optimizer)
    snapshot_loss = min_loss = math.inf
    n_steps = 0
    start_time = time.perf_counter()
    bar = tqdm(total=max_iter, desc=description, disable=not verbose, leave=False)
    model.train()
    try:
        # Iterations count accepted steps only; a step rejected by the divergence
        # guard is retried after the rollback, at most max_divergences times.
        while n_steps < max_iter:
            it = n_steps
            optimizer.zero_grad(set_to_none=True)
            x, prediction = model(rng)
            if it == 0:
                _check_shapes(x, prediction, target, reference)
            total = loss(prediction, target)
            if regularizer is not None:
                total = total + regularizer(x)
            total.backward()
            loss_value = float(total.detach())  # the one required sync per step
            # The ratio test waits for the first checkpoint interval: the first
            # Adam steps of some networks overshoot briefly before settling.
            spiked = it >= checkpoint_every and loss_value > divergence_ratio * min_loss
            if not math.isfinite(loss_value) or spiked:
                model.load_state_dict(snapshot[0])
                optimizer.load_state_dict(snapshot[1])
                # Measure later steps against the restored point, or a rollback
                # to a snapshot older than the lowest loss would loop forever.
                min_loss = snapshot_loss
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                events.append({"iteration": it, "loss": loss_value, "lr": _lrs(optimizer)})
                if len(events) > max_divergences:
                    stopped_by = "divergence"
                    warnings.warn(
                        f"the fit diverged {len(events)} times; stopping at iteration {it} "
                        "with the best estimate so far. Try a smaller learning rate.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    break
                continue
            optimizer.step()
            n_steps += 1
            min_loss = min(min_loss, loss_value)
            # The snapshot taken before the first step stands until the first
            # full interval, so even a bad first step can be undone.
            if (it + 1) % checkpoint_every == 0:
                snapshot = _snapshot(model, optimizer)
                snapshot_loss = loss_value

            raw = x.detach()
            if averaging is not None:
                if average is None:
                    average = raw.clone()
                else:
                    average.mul_(averaging).add_(raw, alpha=1.0 - averaging)
                estimate = average
            else:
                estimate = raw
            last = estimate

            scalars = []
            sig = rule.signal(monitor(raw if watch_raw else estimate), it)
            if sig is not None and first_checked is None:
                first_checked = it
            if sig is not None:
                scalars.append(sig.reshape(()).float())
            if reference is not None:
                scalars.append(_psnr(estimate, reference).float())
                if averaging is not None:
                    scalars.append(_psnr(raw, reference).float())
            values = torch.stack(scalars).tolist() if scalars else []

            losses.append(loss_value)
            signal_value = values.pop(0) if sig is not None else math.nan
            signals.append(signal_value)
            if reference is not None:
                psnrs.append(values.pop(0))
                if averaging is not None:
                    psnrs_raw.append(values.pop(0))

            if passive or sig is None:
                is_best, stop = False, False
            else:
                is_best, stop = rule.observe(signal_value, it)
            if is_best:
                detected = it
            if is_best and watch_raw:
                capture_at = it + delay
            elif is_best:
                best = estimate.clone()
                best_iter = it
            if capture_at == it:
                best, best_iter, capture_at = estimate.clone(), it, None

            if verbose:
                bar.update(1)
                if it % 25 == 0:
                    bar.set_postfix(loss=f"{loss_value:.3e}", signal=f"{signal_value:.3e}")
            if callback is not None and callback(it, loss_value, estimate):
                stopped_by = "callback"
                break
            if stop:
                stopped_by = "early_stopping"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupted"
        warnings.warn(
            f"fit interrupted after {n_steps} steps; keeping the best estimate so far",
            RuntimeWarning,
            stacklevel=3,
        )
    finally:
        bar.close()
    elapsed = time.perf_counter() - start_time

    if stopped_by == "early_stopping" and detected is not None and detected == first_checked:
        warnings.warn(
            f"the running variance was lowest at the first iteration it was checked ({detected}) "
            "and never went lower: often a spurious early minimum (the network was still "
            "learning structure, e.g. a texture). Consider a longer warm-up (early_stopping="
            "ExponentialMovingVariance(warmup=...)) and compare with the result at a later step.",
            UserWarning,
            stacklevel=3,
        )
    if capture_at is not None and last is not None:
        # The run ended inside the delay: the latest average is the closest.
        best, best_iter = last.clone(), n_steps - 1
    if last is None:  # not a single good step
        with torch.no_grad():
            last = model(None)[0].detach()
    if best is None or passive:
        best, best_iter = last, max(n_steps - 1, 0)
    history = {
        "loss": np.asarray(losses),
        "signal": np.asarray(signals),
        "divergences": events,
        "fit_time": elapsed,
        "seconds_per_step": elapsed / max(len(losses), 1),
    }
    if reference is not None:
        history["psnr"] = np.asarray(psnrs)
        if averaging is not None:
            history["psnr_raw"] = np.asarray(psnrs_raw)
    # The model stays in training mode: BatchNorm in eval mode would use running
    # statistics and produce a different image than the estimate returned.
    return FitResult(
        estimate=best.detach().to("cpu"),
        last=last.detach().to("cpu"),
        best_iter=int(best_iter),
        n_iter=int(n_steps),
        stopped_by=stopped_by,
        history=history,
        model=model,
    )


def _check_shapes(x, prediction, target, reference) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"the model predicts measurements of shape {tuple(prediction.shape)} but the "
            f"observation has shape {tuple(target.shape)}; check the forward operator"
        )
    if reference is not None and reference.shape != x.shape:
        raise ValueError(
            f"the clean reference y has shape {tuple(reference.shape)} (as (1, C, H, W)) but "
            f"the reconstruction has shape {tuple(x.shape)}"
        )


def _lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]
