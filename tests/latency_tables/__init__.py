"""Fakes shared by the latency-table tests: a device whose latency is a known function of the module, and a
tiny search space whose networks vary in width, depth and kernel.

``FakeDevice`` charges ``call_ms`` per runtime call, ``ms_per_mmac`` per million MACs (``1 + network_scale`` times
that inside a whole network, as caches make ops slower in a network than alone), and ``network_ms`` more for a
whole network (what pooling would cost), so a calibration over its networks must recover ``call_ms``,
``intercept = call_ms + network_ms`` and ``scale = network_scale`` exactly. ``hgc_scale`` charges a whole
network's HGC blocks (op kind ``hgc_ir``) that much more again, as measured HGC networks run less efficiently than
fused ones, which calibration must recover as that kind's own scale.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

import zoo
from common.environment import Environment
from latency_tables.measure import BenchConfig, LatencyResult
from zoo.spec import ArchSpec, BlockSpec

ENVIRONMENT = Environment(cpu_model="Fake CPU", logical_cores=2, machine="x86_64", os="Linux", python="3.11",
                          torch="2.14", onnx=None, onnxruntime="1.0", numpy="2.0")
FAST = BenchConfig(threads=1, warmup_runs=0, warmup_min_seconds=0.0, runs=3, min_seconds=0.0, max_seconds=1.0)


@dataclass(frozen=True)
class FakeInfo:
    name: str
    runtime: str
    runtime_version: str | None
    fingerprint: str | None
    environment: Environment


@dataclass
class FakeDevice:
    """Deterministic latency; records every call's label; raises KeyboardInterrupt after ``interrupt_after`` calls."""

    name: str = "fake-cpu-t1"
    runtime: str = "fake-runtime"
    runtime_version: str = "1.0"
    fingerprint: str = "fp-1"
    call_ms: float = 0.05
    ms_per_mmac: float = 0.01
    network_ms: float = 0.3
    network_scale: float = 0.0
    hgc_scale: float = 0.0
    interrupt_after: int | None = None
    calls: list[str] = field(default_factory=list)

    def describe(self) -> FakeInfo:
        return FakeInfo(self.name, self.runtime, self.runtime_version, self.fingerprint, ENVIRONMENT)

    def latency_ms(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        if isinstance(model, nn.Linear):
            macs = model.in_features * model.out_features
        else:
            macs = zoo.count_module(model, input_shape[1:]).macs
        if hasattr(model, "forward_head"):  # a whole network
            hgc = sum(op.macs for op in zoo.iter_ops(model.arch_spec, input_shape[1:]) if op.kind == "hgc_ir") \
                if self.hgc_scale else 0
            return (self.call_ms + (1 + self.network_scale) * self.ms_per_mmac * macs / 1e6 + self.network_ms
                    + self.hgc_scale * self.ms_per_mmac * hgc / 1e6)
        return self.call_ms + self.ms_per_mmac * macs / 1e6

    def measure(self, model: nn.Module, input_shape: tuple[int, ...], cfg: BenchConfig,
                label: str = "") -> LatencyResult:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(label)
        ms = self.latency_ms(model, input_shape)
        return LatencyResult(runtime=self.runtime, model=label, input_shape=tuple(input_shape), threads=cfg.threads,
                             n=cfg.runs, median_ms=ms, mean_ms=ms, std_ms=0.01, min_ms=ms,
                             p10_ms=ms * 0.97, p90_ms=ms * 1.05, first_run_ms=ms, session_create_ms=0.0,
                             environment=ENVIRONMENT, timestamp="2025-01-01T00:00:00+00:00", config=cfg)


@dataclass(frozen=True)
class TinySpace:
    """Stem conv, one stage of 1..max_depth inverted residuals (a kernel each), classifier; a few widths.

    An arch is ``(width, k1, ..., kd)``. Networks differ in op count, so the overhead fit is identifiable.
    """

    name: str = "tiny"
    widths: tuple[int, ...] = (16, 32)
    kernels: tuple[int, ...] = (3, 5)
    max_depth: int = 3
    size: int = 16

    def spec(self, width: int, kernels: tuple[int, ...]) -> ArchSpec:
        blocks = tuple(BlockSpec("ir", width, stride=2 if i == 0 else 1, kernel=k, expand=3.0, act="relu")
                       for i, k in enumerate(kernels))
        return ArchSpec(family="tiny", stem=BlockSpec("conv", 8, 1, 3, act="relu"), stages=(blocks,),
                        num_classes=10)

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        depth = rng.randint(1, self.max_depth)
        return (rng.choice(self.widths), *(rng.choice(self.kernels) for _ in range(depth)))

    def mutate(self, arch: tuple[int, ...], rng: random.Random, prob: float = 0.1) -> tuple[int, ...]:
        return self.sample(rng)

    def to_spec(self, arch: tuple[int, ...]) -> tuple[ArchSpec, tuple[int, int, int]]:
        return self.spec(arch[0], tuple(arch[1:])), (3, self.size, self.size)

    def covering_specs(self) -> Iterator[tuple[ArchSpec, tuple[int, int, int]]]:
        for width in self.widths:
            for k in self.kernels:
                yield self.to_spec((width, *(k,) * self.max_depth))
