"""The Meta-Kernel supernet (Chen et al., arXiv:1912.04749, papers.md §7) and its expected-cost objective.

Owns :class:`MetaKernelSupernet`: the differentiable supernet of :class:`~zoo.spaces.MetaKernelSpace`
(:mod:`zoo.metakernel`), whose stem, fixed first block, head and classifier are the zoo model's and whose 15
searchable layers are, in ``mode="meta"``, one :class:`MetaKernelLayer` each: the candidate depthwise kernels
{3, 5, 7} are merged into one 7×7 *meta kernel* ``W = Σ_k a_k · centre_pad(W_k)`` before a single depthwise
convolution (:func:`meta_kernel`, additivity of convolution), and the expansion ratios {3, 6} into one channel
mask ``Σ_e b_e · 1[ch < e·C_in]`` on the widest hidden tensor; so one layer costs one (widest) block whatever
the number of candidates. ``mode="sum"`` is the DARTS-style baseline over the same candidates and the same
architecture parameters (:class:`MixedLayer`: every (e, k) is its own full zoo block, outputs summed with
weights ``p_e · p_k``). With one-hot probabilities both modes compute exactly the chosen architecture, and
:meth:`MetaKernelSupernet.extract` gives its zoo model's state dict. :class:`MetaKernelCostModel` prices the expected
MACs or table latency of the space's networks (224×224, 1000 classes, whatever data trains the supernet,
as :mod:`search.mctnas`), exactly equal to :func:`zoo.count` / the latency predictor on one-hot probabilities.

Assumptions (papers.md §7.4 marks the layout, schedule and losses unknown, [?]): the space is
:mod:`zoo.metakernel`'s (EfficientNet-B0 skeleton, SE and swish in every block); each candidate kernel has its
own weights and the candidates share ``conv_pw``, both BatchNorms, SE and ``conv_pwl`` (sliced to the first
``e·C_in`` hidden channels); the mask is applied once, after the depthwise conv's BN and activation (every
op before it is per-channel, so one mask is enough for one-hot exactness and is the cheapest place);
architecture parameters are per layer logits over kernels and over expansions, probabilities
``softmax(logits / T)`` (optionally with Gumbel noise in training, as the unofficial re-implementation,
whose schedule ``T0 = 5.0``, ×0.965 per epoch are the defaults, papers.md §7.3); the cost loss is TuNAS'
absolute penalty (:func:`cost_penalty`; the paper's form is not retrievable). With ``space.identity`` the
expansion distribution gets an ``id`` option first (``p(id) = b_id``, ``p(e, k) = b_e · a_k``): the skip op
(identity, or the space's 1×1 conv + BN where the shape changes) cannot be merged into a kernel of the hidden
path, so its output is mixed DARTS-style, ``b_id · skip(x) + (1 − b_id) · block(x)`` with the block's mask
using the conditional ``b_e / (1 − b_id)``; where the block has a residual this is ``x + (1 − b_id) · f(x)``,
one scalar multiply more than a plain layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InputError
import zoo
from search.differentiable import cost_penalty
from search.oneshot import flat_blocks
from latency_tables.predict import MissingKeysError, Predictor
from latency_tables.table import NoTablesError, Overhead
from zoo.spaces import Arch, MetaKernelSpace
from zoo.blocks import block_kind
from zoo.layers import create_act
from zoo.mbconv import SqueezeExcite, hidden_chs
from zoo.metakernel import EXPANSIONS, KERNELS
from zoo.spec import ArchSpec, BlockSpec

MODES = ("meta", "sum")
METRICS = ("macs", "latency")
GUMBEL_T0 = 5.0  # the unofficial re-implementation's initial temperature (papers.md §7.3)
GUMBEL_DECAY = 0.965  # ... and its per-epoch decay
IDENTITY = "id"

__all__ = ["MetaKernelCostModel", "GUMBEL_DECAY", "GUMBEL_T0", "IDENTITY", "LayerPlan", "METRICS", "MODES", "MetaDepthwise",
           "MetaKernelLayer", "MetaKernelSupernet", "MixedLayer", "centre_pad", "layer_plans",
           "meta_kernel"]


# --- meta kernels -------------------------------------------------------------------------------------------------


def centre_pad(weight: Tensor, size: int) -> Tensor:
    """A (…, k, k) kernel zero-padded to (…, size, size) with the original at the centre (k, size odd)."""
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 != size % 2 or k > size:
        raise InputError(f"centre_pad needs a square odd kernel no larger than {size}, got {tuple(weight.shape)}")
    p = (size - k) // 2
    return F.pad(weight, (p, p, p, p))


def meta_kernel(weights: Sequence[Tensor], probs: Tensor) -> Tensor:
    """``Σ_i probs[i] · centre_pad(weights[i])`` at the largest candidate's size: the one kernel that convolves
    like the probability-weighted sum of the candidates' convolutions (same stride, padding ``size // 2``)."""
    if probs.shape != (len(weights),):
        raise InputError(f"meta_kernel: {len(weights)} kernels need {len(weights)} probabilities, got shape "
                         f"{tuple(probs.shape)}")
    size = max(w.shape[-1] for w in weights)
    return sum(p * centre_pad(w, size) for p, w in zip(probs, weights))  # type: ignore[return-value]


class MetaDepthwise(nn.Module):
    """Depthwise candidates ``candidates.<i>`` (kernel ``kernels[i]``, stride) run as one meta-kernel convolution."""

    def __init__(self, channels: int, kernels: Sequence[int], stride: int) -> None:
        super().__init__()
        self.kernels = tuple(kernels)
        self.stride = stride
        self.channels = channels
        self.size = max(self.kernels)
        self.candidates = nn.ModuleList(nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels, bias=False)
                                        for k in self.kernels)

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        weight = meta_kernel([c.weight for c in self.candidates], probs)
        return F.conv2d(x, weight, None, self.stride, self.size // 2, 1, self.channels)


# --- layers -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPlan:
    """One searchable layer: where it sits (``blocks.<stage>.<index>``), its input width and each token's block."""

    stage: int
    index: int
    in_chs: int
    blocks: Mapping[str, BlockSpec]

    @property
    def name(self) -> str:
        return f"blocks.{self.stage}.{self.index}"


def layer_plans(space: MetaKernelSpace, num_classes: int | None = None) -> list[LayerPlan]:
    """The searchable layers of ``space``, read from its specs (a layer is a block that changes with its token)."""
    choices = space.choices()
    tokens = choices[0]
    specs = {}
    for t in tokens:
        spec, _ = space.to_spec((t,) * len(choices))
        assert isinstance(spec, ArchSpec)
        specs[t] = spec if num_classes is None else spec.replace(num_classes=num_classes)
    flats = {t: flat_blocks(s) for t, s in specs.items()}
    plans = []
    for k, (s, b, chs, _) in enumerate(flats[tokens[0]]):
        blocks = {t: flats[t][k][3] for t in tokens}
        if len(set(blocks.values())) == 1:
            continue
        if len({flats[t][k][2] for t in tokens}) != 1:
            raise InputError(f"{space.name}: blocks.{s}.{b} reads a width that depends on other layers' tokens")
        plans.append(LayerPlan(s, b, chs, blocks))
    if len(plans) != len(choices):
        raise InputError(f"{space.name}: {len(choices)} arch positions but {len(plans)} blocks change with the token")
    return plans


def _token(e: int, k: int) -> str:
    return f"e{e}k{k}"


def _corner(source: Tensor, target: Tensor, name: str) -> Tensor:
    """The leading corner of ``source`` of ``target``'s shape (the first channels along every dimension)."""
    if source.dim() != target.dim() or any(t > s for s, t in zip(source.shape, target.shape)):
        raise InputError(f"{name}: cannot slice {tuple(target.shape)} out of {tuple(source.shape)}")
    return source[tuple(slice(0, n) for n in target.shape)]


def _block_template(in_chs: int, block: BlockSpec) -> dict[str, Tensor]:
    """The state dict (on the meta device: shapes only) of the zoo block ``block`` reading ``in_chs`` channels."""
    with torch.device("meta"):
        return block_kind(block.kind).build(in_chs, block).state_dict()


class MetaKernelLayer(nn.Module):
    """One searchable layer in ``meta`` mode: the widest inverted residual with meta-kernel depthwise and a mask.

    ``conv_pw`` → ``bn1`` → act → ``conv_dw`` (:class:`MetaDepthwise`) → ``bn2`` → act → × mask →
    ``se`` → ``conv_pwl`` → ``bn3`` (+ input when the zoo block has its residual); ``skip`` (the space's ``id``
    op) when ``identity``. ``forward(x, kernel_probs, expansion_probs)``; expansion probabilities start with
    ``id`` when the layer has it.
    """

    def __init__(self, plan: LayerPlan, identity: bool) -> None:
        super().__init__()
        self.plan = plan
        self.identity = identity
        chs = plan.in_chs
        ref = plan.blocks[_token(max(EXPANSIONS), max(KERNELS))]
        for t in (_token(e, k) for e in EXPANSIONS for k in KERNELS):
            block = plan.blocks[t]
            if (block.kind, block.out_chs, block.stride, block.act, block.se, block.residual) != (
                    ref.kind, ref.out_chs, ref.stride, ref.act, ref.se, ref.residual) or block.kind != "ir":
                raise InputError(f"{plan.name}: candidate {t} differs from {ref} in more than kernel and expansion")
        if ref.se is not None and ref.se.reduced_chs(chs, 1) != ref.se.reduced_chs(chs, 2):
            raise InputError(f"{plan.name}: the SE width depends on the hidden width; the candidates cannot share it")
        mid = hidden_chs(chs, ref)
        self.widths = tuple(hidden_chs(chs, plan.blocks[_token(e, max(KERNELS))]) for e in EXPANSIONS)
        self.has_skip = ref.residual and ref.stride == 1 and chs == ref.out_chs
        self.conv_pw = nn.Conv2d(chs, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = create_act(ref.act)
        self.conv_dw = MetaDepthwise(mid, KERNELS, ref.stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = create_act(ref.act)
        self.se = SqueezeExcite(chs, mid, ref.se, ref.act) if ref.se else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, ref.out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ref.out_chs)
        if identity:
            self.skip = block_kind("skip").build(chs, plan.blocks[IDENTITY])
        # Row i: 1 on the first widths[i] hidden channels (derived from the plan, so not in the state dict).
        masks = (torch.arange(mid)[None, :] < torch.tensor(self.widths)[:, None]).float()
        self.register_buffer("masks", masks, persistent=False)

    def forward(self, x: Tensor, kernel_probs: Tensor, expansion_probs: Tensor) -> Tensor:
        probs = expansion_probs
        if self.identity:
            # p(e | not id); clamped so a one-hot ``id`` gives a zero mask (times a zero weight) rather than 0/0.
            block_weight = expansion_probs[1:].sum()
            probs = expansion_probs[1:] / block_weight.clamp_min(torch.finfo(probs.dtype).tiny)
        mask = (probs @ self.masks.to(probs.dtype))[None, :, None, None]
        h = self.act1(self.bn1(self.conv_pw(x)))
        h = self.act2(self.bn2(self.conv_dw(h, kernel_probs))) * mask
        h = self.bn3(self.conv_pwl(self.se(h)))
        if self.has_skip:
            h = h + x
        if self.identity:
            h = expansion_probs[0] * self.skip(x) + block_weight * h
        return h

    def extract(self, token: str) -> dict[str, Tensor]:
        """The state dict of the zoo block of ``token`` (keys relative to the block) holding this layer's weights."""
        block = self.plan.blocks[token]
        if token == IDENTITY:
            return {k: v for k, v in self.skip.state_dict().items()}
        own = self.state_dict()
        kernel = KERNELS.index(block.kernel)
        out = {}
        for key, target in _block_template(self.plan.in_chs, block).items():
            source = own[f"conv_dw.candidates.{kernel}.weight" if key == "conv_dw.weight" else key]
            out[key] = _corner(source, target, f"{self.plan.name}.{key}")
        return out


class MixedLayer(nn.Module):
    """One searchable layer in ``sum`` mode (DARTS): ``candidates.<j>`` is the zoo block of the j-th ``e·k`` token
    (``e3k3, e3k5, …, e6k7``), ``skip`` the ``id`` op; the output is the probability-weighted sum of all outputs."""

    def __init__(self, plan: LayerPlan, identity: bool) -> None:
        super().__init__()
        self.plan = plan
        self.identity = identity
        self.tokens = tuple(_token(e, k) for e in EXPANSIONS for k in KERNELS)
        self.candidates = nn.ModuleList(block_kind(plan.blocks[t].kind).build(plan.in_chs, plan.blocks[t])
                                        for t in self.tokens)
        if identity:
            self.skip = block_kind("skip").build(plan.in_chs, plan.blocks[IDENTITY])

    def forward(self, x: Tensor, kernel_probs: Tensor, expansion_probs: Tensor) -> Tensor:
        probs = expansion_probs[1:] if self.identity else expansion_probs
        joint = (probs[:, None] * kernel_probs[None, :]).reshape(-1)  # token order: e-major, as self.tokens
        out = sum(w * c(x) for w, c in zip(joint, self.candidates))
        if self.identity:
            out = out + expansion_probs[0] * self.skip(x)
        return out  # type: ignore[return-value]

    def extract(self, token: str) -> dict[str, Tensor]:
        """The state dict of the zoo block of ``token`` (keys relative to the block)."""
        module = self.skip if token == IDENTITY else self.candidates[self.tokens.index(token)]
        return dict(module.state_dict())


# --- the supernet -------------------------------------------------------------------------------------------------


class MetaKernelSupernet(nn.Module):
    """The differentiable supernet of a :class:`MetaKernelSpace` (see the module docstring).

    Args:
        space: the space (``identity=True`` adds the ``id`` candidate).
        num_classes: classifier outputs (default 1000, the space's).
        mode: ``"meta"`` (meta kernels and channel masks) or ``"sum"`` (every candidate computed, outputs summed).
        gumbel: add Gumbel noise to the logits in training mode (from the global torch RNG).
        temperature: the initial temperature T0 of ``softmax(logits / T)``.
        temperature_decay: the per-epoch factor of :meth:`on_epoch` (``T = T0 · decay^epoch``).

    ``kernel_logits`` (layers × 3: kernels 3, 5, 7) and ``expansion_logits`` (layers × 2: ratios 3, 6; × 3 with
    ``id`` first when the space has identity) are the architecture parameters, starting uniform over each
    layer's tokens at T0.
    """

    def __init__(self, space: MetaKernelSpace, num_classes: int = 1000, mode: str = "meta", *, gumbel: bool = False,
                 temperature: float = GUMBEL_T0, temperature_decay: float = GUMBEL_DECAY) -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"MetaKernelSupernet mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(space, MetaKernelSpace):
            raise InputError(f"MetaKernelSupernet needs a MetaKernelSpace, got {type(space).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if not 0.0 < temperature_decay <= 1.0:
            raise InputError(f"temperature_decay must be in (0, 1], got {temperature_decay!r}")
        self.space = space
        self.num_classes = num_classes
        self.mode = mode
        self.gumbel = bool(gumbel)
        self.t0 = _check_temperature(temperature)
        self.temperature_decay = float(temperature_decay)
        self.temperature = self.t0
        self.choices: tuple[tuple[str, ...], ...] = tuple(space.choices())
        self.expansion_options: tuple[str, ...] = ((IDENTITY,) if space.identity else ()) + tuple(map(str, EXPANSIONS))
        self.plans = layer_plans(space, num_classes)
        self.net = zoo.build_model(self.spec_of(tuple(c[-1] for c in self.choices)))
        layer = MetaKernelLayer if mode == "meta" else MixedLayer
        for plan in self.plans:
            self.net.blocks[plan.stage][plan.index] = layer(plan, space.identity)
        self.net.init_weights()  # the zoo's init for the layers too (and again for the shared parts)
        self.kernel_logits = nn.Parameter(torch.zeros(len(self.plans), len(KERNELS)))
        # Uniform over the layer's tokens at T0: with ``id``, b = (1, 3, 3) / 7 gives p(id) = p(e, k) = 1/7.
        share = torch.tensor(([1.0] if space.identity else [])
                             + [float(len(KERNELS)) if space.identity else 1.0] * len(EXPANSIONS))
        self.expansion_logits = nn.Parameter((self.t0 * share.log()).repeat(len(self.plans), 1))
        self.cost_model: MetaKernelCostModel | None = None
        self.cost_target = 0.0
        self.cost_weight = 0.0

    # -- parameters and temperature ------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.kernel_logits, self.expansion_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def set_temperature(self, temperature: float) -> None:
        self.temperature = _check_temperature(temperature)

    def on_epoch(self, epoch: int) -> None:
        """The schedule: ``T = T0 · decay^epoch`` (epochs counted from 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InputError(f"epoch must be an int >= 0, got {epoch!r}")
        self.set_temperature(self.t0 * self.temperature_decay ** epoch)

    # -- architectures -------------------------------------------------------------------------------------------

    def spec_of(self, tokens: Arch) -> ArchSpec:
        """The zoo spec of ``tokens`` with this supernet's classes."""
        spec, _ = self.space.to_spec(tuple(tokens))
        assert isinstance(spec, ArchSpec)
        return spec.replace(num_classes=self.num_classes)

    def _probs(self, noise: bool) -> tuple[Tensor, Tensor]:
        logits = (self.kernel_logits, self.expansion_logits)
        if noise:
            # -log(Exp(1)) is Gumbel(0, 1); drawn from the global RNG so torch.manual_seed fixes it.
            logits = tuple(lg - torch.empty_like(lg).exponential_().log() for lg in logits)
        kernel, expansion = (F.softmax(lg / self.temperature, dim=-1) for lg in logits)
        return kernel, expansion

    def arch_probs(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer (kernel probs over 3, 5, 7; expansion probs over ``expansion_options``), without noise."""
        kernel, expansion = self._probs(noise=False)
        return list(zip(kernel.unbind(0), expansion.unbind(0)))

    def one_hot(self, tokens: Arch) -> tuple[Tensor, Tensor]:
        """(kernel, expansion) probability matrices putting all mass on ``tokens`` (checked against the space)."""
        tokens = self.space.check(tuple(tokens))
        kernel = torch.zeros_like(self.kernel_logits, requires_grad=False)
        expansion = torch.zeros_like(self.expansion_logits, requires_grad=False)
        for i, t in enumerate(tokens):
            if t == IDENTITY:
                expansion[i, 0] = 1.0
                kernel[i, 0] = 1.0  # unused by an identity layer; any distribution works
            else:
                expansion[i, self.expansion_options.index(t[1])] = 1.0
                kernel[i, KERNELS.index(int(t[3]))] = 1.0
        return kernel, expansion

    def derive(self) -> tuple[str, ...]:
        """The most probable token of every layer under ``p(id) = b_id``, ``p(e, k) = b_e · a_k``."""
        out = []
        with torch.no_grad():
            probs = self.arch_probs()
        for kernel, expansion in probs:
            joint = {IDENTITY: float(expansion[0])} if self.space.identity else {}
            offset = 1 if self.space.identity else 0
            for i, e in enumerate(EXPANSIONS):
                for j, k in enumerate(KERNELS):
                    joint[_token(e, k)] = float(expansion[offset + i] * kernel[j])
            out.append(max(joint, key=lambda t: joint[t]))  # ties: the first in space order
        return self.space.check(tuple(out))

    def arch_summary(self) -> dict[str, Any]:
        """JSON-able: temperature, per-layer probabilities and the derived tokens (and the expected cost, if set)."""
        with torch.no_grad():
            probs = self.arch_probs()
        layers = [{"layer": plan.name,
                   "kernel": {str(k): float(p) for k, p in zip(KERNELS, kernel)},
                   "expansion": {o: float(p) for o, p in zip(self.expansion_options, expansion)}}
                  for plan, (kernel, expansion) in zip(self.plans, probs)]
        out: dict[str, Any] = {"mode": self.mode, "temperature": self.temperature, "layers": layers,
                               "derived": list(self.derive())}
        if self.cost_model is not None:
            with torch.no_grad():
                out["expected_cost"] = float(self.cost_model.expected(*self._probs(noise=False)))
            out["cost_metric"], out["cost_target"] = self.cost_model.metric, self.cost_target
        return out

    # -- cost objective ------------------------------------------------------------------------------------------

    def set_cost_objective(self, cost_model: MetaKernelCostModel, target: float, weight: float = 1.0) -> None:
        """Add ``weight · |E[cost] / target − 1|`` to :meth:`arch_loss_terms`."""
        if cost_model.space != self.space:
            raise InputError(f"the cost model prices space {cost_model.space}, the supernet's is {self.space}")
        if not math.isfinite(target) or target <= 0:
            raise InputError(f"cost target must be a finite number > 0, got {target!r}")
        if not math.isfinite(weight) or weight < 0:
            raise InputError(f"cost weight must be a finite number >= 0, got {weight!r}")
        self.cost_model, self.cost_target, self.cost_weight = cost_model, float(target), float(weight)

    def arch_loss_terms(self) -> dict[str, Tensor]:
        """``{"cost": penalty}`` under the current (noise-free) distribution when an objective is set, else {}."""
        if self.cost_model is None:
            return {}
        kernel, expansion = self._probs(noise=False)
        expected = self.cost_model.expected(kernel, expansion)
        return {"cost": cost_penalty(expected, self.cost_target, self.cost_weight).to(kernel.dtype)}

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, arch: Arch | None = None) -> Tensor:
        """Logits under the current distribution (Gumbel-perturbed in training if ``gumbel``), or of ``arch``
        (one-hot probabilities through the same mixing code)."""
        chans = self.net.arch_spec.in_chans
        if x.dim() != 4 or x.shape[1] != chans:
            raise InputError(f"MetaKernelSupernet expects input (N, {chans}, H, W), got {tuple(x.shape)}")
        kernel, expansion = self._probs(self.gumbel and self.training) if arch is None else self.one_hot(arch)
        net = self.net
        x = net.stem_pool(net.act1(net.bn1(net.conv_stem(x))))
        layer = 0
        for stage in net.blocks:
            for block in stage:
                if isinstance(block, (MetaKernelLayer, MixedLayer)):
                    x = block(x, kernel[layer], expansion[layer])
                    layer += 1
                else:
                    x = block(x)
        x = net.act2(net.bn2(net.conv_head(x)))
        return net.forward_head(x)

    # -- extraction ----------------------------------------------------------------------------------------------

    def extract(self, tokens: Arch) -> dict[str, Tensor]:
        """The state dict of ``zoo.build_model(self.spec_of(tokens))`` holding the inherited weights (copies)."""
        tokens = self.space.check(tuple(tokens))
        layers = {plan.name + ".": (plan, token) for plan, token in zip(self.plans, tokens)}
        out: dict[str, Tensor] = {}
        done: set[str] = set()
        for key, value in self.net.state_dict().items():  # in the zoo model's key order
            head = ".".join(key.split(".")[:3]) + "."
            if head not in layers:
                out[key] = value
            elif head not in done:
                done.add(head)
                plan, token = layers[head]
                block = self.net.blocks[plan.stage][plan.index]
                out.update({head + k: v for k, v in block.extract(token).items()})
        return {k: v.detach().clone() for k, v in out.items()}

    def subnet(self, tokens: Arch) -> nn.Module:
        """The zoo model of ``tokens`` holding the inherited weights (same device and mode as the supernet)."""
        model = zoo.build_model(self.spec_of(tokens)).to(self.kernel_logits.device)
        model.load_state_dict(self.extract(tokens), strict=True)
        return model.train(self.training)


def _check_temperature(t: float) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise InputError(f"temperature must be a finite number > 0, got {t!r}")
    return float(t)


# --- expected cost ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaKernelCostModel:
    """Per-layer, per-token costs of a :class:`MetaKernelSpace`'s networks (its 224×224 input, 1000 classes).

    ``costs[i][t]`` is what layer ``i`` (op ``blocks.<s>.<j>`` of :func:`zoo.iter_ops`) costs with token ``t``;
    ``fixed`` the sum over the other ops. For ``latency`` the network's time is the table's overhead map
    ``overhead.network_ms(n_ops, Σ ops)`` (linear in the op sum; every arch has ``n_ops`` walker ops), as
    :class:`~latency_tables.predict.Predictor`. Build with :meth:`macs` or :meth:`latency`.
    """

    space: MetaKernelSpace
    metric: str
    costs: tuple[Mapping[str, float], ...]
    fixed: float
    n_ops: int
    overhead: Overhead | None = None
    device: str | None = None

    @classmethod
    def macs(cls, space: MetaKernelSpace) -> MetaKernelCostModel:
        """MACs from :func:`zoo.iter_ops` on the space's covering specs."""
        return cls._build(space, "macs", None, lambda arch: [(op.name, float(op.macs)) for op in
                                                              zoo.iter_ops(*space.to_spec(arch))])

    @classmethod
    def latency(cls, space: MetaKernelSpace, device: str, root: Path | None = None) -> MetaKernelCostModel:
        """Milliseconds per op from ``device``'s latency tables (under ``root``, default the tables root), with the
        overhead of the space's own table; ``ValueError`` naming device and space when the table or a key is missing."""
        try:
            predictor = Predictor.for_device(device, root)
        except NoTablesError as err:
            raise InputError(f"no latency table for space {space.name!r} on device {device!r}: {err}") from err
        table = next((t for t in predictor.tables if t.space == space.name), None)
        if table is None:
            raise InputError(f"device {device!r} has no latency table for space {space.name!r} (tables: "
                             f"{', '.join(t.space for t in predictor.tables)})")

        def ops(arch: Arch) -> list[tuple[str, float]]:
            try:
                return [(op.name, op.ms) for op in predictor.predict_arch(space, arch).ops]
            except MissingKeysError as err:
                raise InputError(f"the latency table of space {space.name!r} on device {device!r} lacks ops of "
                                 f"arch {arch}: {err}") from err

        return cls._build(space, "latency", table.overhead, ops, device)

    @classmethod
    def _build(cls, space: MetaKernelSpace, metric: str, overhead: Overhead | None,
               ops_of: Callable[[Arch], list[tuple[str, float]]], device: str | None = None) -> MetaKernelCostModel:
        """Prices every (layer, token) from ``ops_of(arch)`` (``(op name, cost)`` per walker op) on the covering archs."""
        plans = {plan.name: i for i, plan in enumerate(layer_plans(space))}
        costs: list[dict[str, float]] = [{} for _ in plans]
        fixed: set[float] = set()
        counts: set[int] = set()
        for arch in space.covering_archs():
            ops = ops_of(arch)
            counts.add(len(ops))
            rest = 0.0
            for name, value in ops:
                if name in plans:
                    costs[plans[name]][arch[plans[name]]] = value
                else:
                    rest += value
            fixed.add(rest)
        choices = space.choices()
        missing = [(i, t) for i, c in enumerate(choices) for t in c if t not in costs[i]]
        if missing or len(counts) != 1 or len(fixed) != 1:
            raise InputError(f"{space.name}: the covering specs do not price every (layer, token) with constant fixed "
                             f"ops (missing {missing[:3]}, op counts {sorted(counts)}, fixed costs {sorted(fixed)})")
        return cls(space, metric, tuple(costs), fixed.pop(), counts.pop(), overhead, device)

    def _table(self) -> Tensor:
        """(layers, expansion options, kernels) float64; the ``id`` row repeats its cost over the kernels."""
        rows = []
        for cost in self.costs:
            options = ([[cost[IDENTITY]] * len(KERNELS)] if self.space.identity else [])
            rows.append(options + [[cost[_token(e, k)] for k in KERNELS] for e in EXPANSIONS])
        return torch.tensor(rows, dtype=torch.float64)

    def _network(self, ops: Any) -> Any:
        if self.metric == "latency" and self.overhead is not None:
            return self.overhead.network_ms(self.n_ops, ops)
        return ops

    def expected(self, kernel_probs: Tensor | Sequence[Tensor], expansion_probs: Tensor | Sequence[Tensor]) -> Tensor:
        """``fixed + Σ_layers Σ_{e,k} p_e p_k c(layer, e, k)`` (+ ``p_id c(layer, id)``), through the overhead
        map for latency; differentiable, float64 (0-dim). Probabilities: (layers, 3) and (layers, 2 or 3)."""
        kernel = torch.stack(list(kernel_probs)) if not isinstance(kernel_probs, Tensor) else kernel_probs
        expansion = torch.stack(list(expansion_probs)) if not isinstance(expansion_probs, Tensor) else expansion_probs
        table = self._table().to(kernel.device)
        layers, options, kernels = table.shape
        if tuple(kernel.shape) != (layers, kernels) or tuple(expansion.shape) != (layers, options):
            raise InputError(f"{self.space.name}: expected kernel probabilities of shape {(layers, kernels)} and "
                             f"expansion probabilities of shape {(layers, options)}, got {tuple(kernel.shape)} and "
                             f"{tuple(expansion.shape)}")
        weights = expansion.double()[:, :, None] * kernel.double()[:, None, :]
        return self._network(self.fixed + (weights * table).sum())

    def exact(self, tokens: Arch) -> float:
        """The cost of one architecture: equals :func:`zoo.count` (MACs) or the predictor's ``total_ms``."""
        tokens = self.space.check(tuple(tokens))
        return float(self._network(self.fixed + sum(c[t] for c, t in zip(self.costs, tokens))))
