"""The bilevel step shared by the differentiable searches (EoiNAS / DARTS cells, Meta Kernels) on the engine.

Owns :class:`ArchConfig` (DARTS' architecture optimiser: Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3,
first- or second-order) and :class:`BilevelStep`, the engine ``step_fn`` that alternates, as DARTS'
``train_search.py`` does, one architecture update on a batch of the held-out half (the engine stream
``"val"``) and one weight update on the training batch. A supernet takes part through a small protocol:
``arch_parameters()`` (what the architecture optimiser owns; the weight optimiser must not), optionally
``arch_loss_terms()`` (extra differentiable terms of the architecture loss, e.g. an expected-latency
penalty) and ``on_epoch(epoch)`` (called when a step opens a new epoch, e.g. a temperature schedule).
``after_arch_backward`` is called after every architecture backward, while the gradients exist (EoiNAS
reads its operation-importance indicator there).

Second order is DARTS' unrolled approximation: the validation loss at the virtual weights
``w' = w − ξ(μ·buf + ∇w L_train + λw)`` (ξ the step's weight lr, μ/λ/buf the weight optimiser's momentum,
decay and momentum buffer), its Hessian-vector term by finite differences at ``w ± εv`` with
``ε = 0.01/‖v‖``. The weights and the BatchNorm running statistics are restored afterwards (DARTS evaluates
the virtual step on a copy of the model), and under torchrun every weight gradient it uses is averaged over
processes, so all ranks take the same architecture step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import InputError
from search.engine import StepContext
from search.choices import ORDERS

__all__ = ["ArchConfig", "BilevelStep", "ORDERS", "arch_parameter_ids", "cost_penalty", "weight_parameters"]


@dataclass(frozen=True)
class ArchConfig:
    """The architecture optimiser (DARTS' defaults, papers.md §1.3) and when it starts.

    Attributes:
        lr, betas, weight_decay: Adam's.
        order: ``"first"`` (α updated at the current weights) or ``"second"`` (DARTS' unrolled step).
        start_step: steps of weight-only training before the first architecture update (0: DARTS).
        fd_epsilon: the finite-difference scale of the second-order Hessian term (DARTS: 0.01).
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3
    order: str = "first"
    start_step: int = 0
    fd_epsilon: float = 0.01

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise InputError(f"ArchConfig.order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        for name in ("lr", "fd_epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"ArchConfig.{name} must be a number > 0, got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or self.weight_decay < 0:
            raise InputError(f"ArchConfig.weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"ArchConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if isinstance(self.start_step, bool) or not isinstance(self.start_step, int) or self.start_step < 0:
            raise InputError(f"ArchConfig.start_step must be an int >= 0, got {self.start_step!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cost_penalty(expected: Tensor, target: float, weight: float) -> Tensor:
    """TuNAS' absolute cost penalty ``weight · |expected / target − 1|``, the cost term of both searches.

    Neither paper's form is retrievable (Meta Kernels' re-implementation uses λ·(−log lat) outside a ±10 % band,
    papers.md §7.3, which only pushes down); the absolute form drives the expected cost onto the budget from
    both sides, so a budget is neither overshot nor left unused.
    """
    if not target > 0:
        raise InputError(f"cost target must be > 0, got {target!r}")
    return weight * (expected / target - 1.0).abs()


def arch_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in model.arch_parameters()}  # type: ignore[operator]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter of ``model`` except its architecture parameters (what SGD should own)."""
    arch = arch_parameter_ids(model)
    return [p for p in model.parameters() if p.requires_grad and id(p) not in arch]


class BilevelStep:
    """DARTS' alternating step for the engine; register it as an engine extra (its Adam state travels).

    The model must define ``arch_parameters()``. Pass :func:`weight_parameters` of the model as the
    trainer's ``params`` and a ``"val"`` stream of held-out images. Returned metrics: the training
    batch's ``loss``/``top1`` and, on steps with an architecture update, ``val_loss`` and each extra
    architecture term (steps before ``start_step`` report them as 0 so every step has the same names).
    """

    def __init__(self, model: nn.Module, config: ArchConfig = ArchConfig(),
                 after_arch_backward: Callable[[], None] | None = None) -> None:
        if not callable(getattr(model, "arch_parameters", None)):
            raise TypeError(f"{type(model).__name__} has no arch_parameters(): not a differentiable supernet")
        self.config = config
        self.arch_params = list(model.arch_parameters())  # type: ignore[operator]
        if not self.arch_params:
            raise InputError(f"{type(model).__name__}.arch_parameters() is empty")
        self.optimizer = torch.optim.Adam(self.arch_params, lr=config.lr, betas=config.betas,
                                          weight_decay=config.weight_decay)
        self.after_arch_backward = after_arch_backward
        self._epoch = -1

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "epoch": self._epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self._epoch = int(state["epoch"])

    def __call__(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, float]:
        if ctx.epoch != self._epoch:
            self._epoch = ctx.epoch
            on_epoch = getattr(model, "on_epoch", None)
            if callable(on_epoch):
                on_epoch(ctx.epoch)
        metrics: dict[str, float] = {"val_loss": 0.0}
        terms_zero = {f"arch_{name}": 0.0 for name in _terms(model)}
        if ctx.step >= self.config.start_step:
            val_images, val_targets = ctx.next_batch("val")
            if self.config.order == "second":
                metrics |= self._second_order(model, images, targets, val_images, val_targets, ctx)
            else:
                metrics |= self._first_order(model, val_images, val_targets, ctx)
            ctx.average_gradients(self.arch_params)
            self.optimizer.step()
            ctx.zero_grad()  # the architecture backward left gradients on the weights
        else:
            metrics |= terms_zero
        for p in self.arch_params:  # the weight step must not leave architecture gradients for the next update
            p.grad = None
        logits = model(images)
        loss = ctx.criterion(logits, targets)
        loss.backward()
        for p in self.arch_params:
            p.grad = None
        metrics |= {"loss": loss.item(), "top1": 100.0 * (logits.argmax(1) == targets).float().mean().item()}
        return metrics

    # --- architecture updates ----------------------------------------------------------------------------------

    def _arch_loss(self, model: nn.Module, images: Tensor, targets: Tensor,
                   criterion: nn.Module) -> tuple[Tensor, dict[str, float]]:
        loss = criterion(model(images), targets)
        metrics = {"val_loss": loss.item()}
        for name, term in _terms(model).items():
            loss = loss + term
            metrics[f"arch_{name}"] = float(term.item())
        return loss, metrics

    def _first_order(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: StepContext) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics = self._arch_loss(model, images, targets, ctx.criterion)
        loss.backward()
        if self.after_arch_backward is not None:
            self.after_arch_backward()
        return metrics

    def _second_order(self, model: nn.Module, images: Tensor, targets: Tensor, val_images: Tensor,
                      val_targets: Tensor, ctx: StepContext) -> dict[str, float]:
        weights = weight_parameters(model)
        saved_w = [p.detach().clone() for p in weights]
        saved_buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        optimizer = ctx.weight_optimizer
        try:
            # w' = w − ξ(μ·buf + ∇w L_train(w) + λw), the weight optimiser's own SGD step without applying it.
            grads = _weight_grads(model, weights, ctx.criterion(model(images), targets), ctx)
            xi = ctx.lr
            with torch.no_grad():
                for p, g in zip(weights, grads):
                    group = _group_of(optimizer, p)
                    buf = optimizer.state.get(p, {}).get("momentum_buffer")
                    step = g + group["weight_decay"] * p
                    if buf is not None:
                        step = step + group["momentum"] * buf
                    p.sub_(xi * step)
            # ∇α L_val(w', α) and v = ∇w' L_val(w', α).
            self.optimizer.zero_grad(set_to_none=True)
            ctx.zero_grad()
            loss, metrics = self._arch_loss(model, val_images, val_targets, ctx.criterion)
            loss.backward()
            if self.after_arch_backward is not None:
                self.after_arch_backward()
            d_alpha = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.arch_params]
            ctx.average_gradients(weights)
            v = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in weights]
            norm = torch.sqrt(sum((x * x).sum() for x in v))
            r = self.config.fd_epsilon / max(float(norm), 1e-12)
            hessian: list[list[Tensor]] = []  # ∇α L_train at w + εv, then at w − εv
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, w0, vi in zip(weights, saved_w, v):
                        p.copy_(w0 + sign * r * vi)
                for p in self.arch_params:
                    p.grad = None
                ctx.criterion(model(images), targets).backward()
                hessian.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                                for p in self.arch_params])
            with torch.no_grad():
                for p, da, gp, gm in zip(self.arch_params, d_alpha, hessian[0], hessian[1]):
                    p.grad = da - xi * (gp - gm) / (2.0 * r)
        finally:
            with torch.no_grad():
                for p, w0 in zip(weights, saved_w):
                    p.copy_(w0)
                buffers = dict(model.named_buffers())
                for k, value in saved_buffers.items():
                    buffers[k].copy_(value)
        return metrics


def _terms(model: nn.Module) -> dict[str, Tensor]:
    terms = getattr(model, "arch_loss_terms", None)
    return dict(terms()) if callable(terms) else {}


def _weight_grads(model: nn.Module, weights: list[nn.Parameter], loss: Tensor, ctx: StepContext) -> list[Tensor]:
    ctx.zero_grad()
    for p in weights:
        p.grad = None
    loss.backward()
    ctx.average_gradients(weights)
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in weights]
    for p in weights:
        p.grad = None
    return grads


def _group_of(optimizer: torch.optim.Optimizer, param: Tensor) -> dict[str, Any]:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    raise InputError("a weight parameter is not owned by the weight optimiser (pass weight_parameters(model) "
                     "as the trainer's params)")
