"""The table builder on a fake device: every key measured, checkpoints, resume after Ctrl-C, refusing to resume a
table measured differently, and an overhead calibration that recovers a device's known per-call costs."""

from __future__ import annotations

import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

import zoo
from latency_tables import Entry, LatencyTable, Overhead
from latency_tables.build import TableMismatchError, build_table, fit_overhead
from zoo.spaces import op_keys
from tests.latency_tables import ENVIRONMENT, FAST, FakeDevice, TinySpace
from zoo.ops import op_module

SPACE = TinySpace()
KEYS = op_keys(SPACE)


def _build(device: FakeDevice, path: Path, **kwargs) -> LatencyTable:
    kwargs.setdefault("cfg", FAST)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("calibration_rounds", 1)  # the fake device does not drift; rounds have their own test
    return build_table(SPACE, device, path=path, **kwargs)


def test_every_key_is_measured_once_with_its_statistics_and_metadata(tmp_path: Path) -> None:
    device = FakeDevice()
    table = _build(device, tmp_path / "tiny.json", calibration_networks=4)
    assert set(table.entries) == set(KEYS)
    op_calls = device.calls[: len(KEYS)]
    assert sorted(op_calls) == sorted(KEYS)  # each key measured exactly once, labelled with its key
    assert device.calls[len(KEYS)] == "runtime-call" and len(device.calls) == len(KEYS) + 1 + 4
    for key, op in KEYS.items():
        entry = table.entries[key]
        assert entry.median_ms == pytest.approx(device.latency_ms(*op_module(op)))
        assert (entry.macs, entry.params, entry.kind, entry.n) == (op.macs, op.params, op.kind, FAST.runs)
        assert entry.p10_ms < entry.median_ms < entry.p90_ms
    assert table.complete and table.source == "measured"
    assert (table.device, table.space, table.runtime, table.runtime_version, table.fingerprint) == (
        "fake-cpu-t1", "tiny", "fake-runtime", "1.0", "fp-1")
    assert table.threads == FAST.threads and table.batch_size == 1 and table.dtype == "float32"
    assert dict(table.protocol) == asdict(FAST)
    assert dict(table.environment) == ENVIRONMENT.to_dict()
    assert table.input_sizes == ((3, 16, 16),)
    assert LatencyTable.load(tmp_path / "tiny.json") == table


def test_partial_table_is_checkpointed_every_n_entries(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    seen: list[int] = []

    class Watching(FakeDevice):
        def measure(self, model, input_shape, cfg, label=""):
            if label in KEYS:  # before measuring op i, the file must hold the last checkpoint
                seen.append(len(LatencyTable.load(path).entries) if path.exists() else 0)
                if path.exists():
                    assert not LatencyTable.load(path).complete
            return super().measure(model, input_shape, cfg, label)

    _build(Watching(), path, checkpoint_every=3, calibration_networks=0)
    assert seen == [3 * (i // 3) for i in range(len(KEYS))]


def test_interrupted_build_resumes_measuring_only_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    with pytest.raises(KeyboardInterrupt):
        _build(FakeDevice(interrupt_after=5), path, checkpoint_every=100)
    partial = LatencyTable.load(path)
    assert not partial.complete and partial.overhead is None
    assert len(partial.entries) == 5  # saved on the interrupt, not only at checkpoints

    device = FakeDevice()
    table = _build(device, path, calibration_networks=3)
    measured_now = device.calls[: len(KEYS) - 5]
    assert len(device.calls) == len(KEYS) - 5 + 1 + 3
    assert set(measured_now) == set(KEYS) - set(partial.entries)
    assert table.complete and set(table.entries) == set(KEYS) and table.created == partial.created
    assert all(table.entries[k] == e for k, e in partial.entries.items())


def test_complete_table_is_not_measured_again(tmp_path: Path) -> None:
    table = _build(FakeDevice(), tmp_path / "tiny.json", calibration_networks=3)
    device = FakeDevice()
    assert _build(device, tmp_path / "tiny.json", calibration_networks=3) == table
    assert device.calls == []


@pytest.mark.parametrize(("device", "cfg", "field"), [
    (FakeDevice(fingerprint="fp-2"), FAST, "fingerprint"),
    (FakeDevice(name="other-device"), FAST, "device"),
    (FakeDevice(runtime="executorch-xnnpack"), FAST, "runtime"),
    (FakeDevice(), replace(FAST, threads=2), "threads"),
    (FakeDevice(), replace(FAST, runs=7), "protocol"),
])
def test_resume_refuses_a_table_measured_differently(tmp_path: Path, device: FakeDevice, cfg, field: str) -> None:
    path = tmp_path / "tiny.json"
    with pytest.raises(KeyboardInterrupt):
        _build(FakeDevice(interrupt_after=4), path)
    with pytest.raises(TableMismatchError) as info:
        _build(device, path, cfg=cfg)
    message = str(info.value)
    assert f"its {field} is" in message and "restart=True" in message and str(path) in message
    assert device.calls == []
    assert len(LatencyTable.load(path).entries) == 4  # the saved work is untouched


def test_restart_discards_a_mismatched_table_and_existing_file_needs_a_choice(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    with pytest.raises(KeyboardInterrupt):
        _build(FakeDevice(interrupt_after=4), path)
    with pytest.raises(FileExistsError, match="resume=True.*restart=True"):
        _build(FakeDevice(), path, resume=False)
    device = FakeDevice(fingerprint="fp-2")
    table = _build(device, path, restart=True, calibration_networks=0)
    assert len(device.calls) == len(KEYS) and table.fingerprint == "fp-2" and table.complete


def test_other_failures_also_keep_the_measured_entries(tmp_path: Path) -> None:
    class Flaky(FakeDevice):
        def measure(self, model, input_shape, cfg, label=""):
            if len(self.calls) == 6:
                raise ConnectionError("agent went away")
            return super().measure(model, input_shape, cfg, label)

    with pytest.raises(ConnectionError):
        _build(Flaky(), tmp_path / "tiny.json", checkpoint_every=4)
    assert len(LatencyTable.load(tmp_path / "tiny.json").entries) == 6


@pytest.mark.parametrize("network_scale", [0.0, 0.15])
def test_calibration_recovers_the_devices_call_network_and_in_network_costs(tmp_path: Path,
                                                                             network_scale: float) -> None:
    device = FakeDevice(call_ms=0.2, network_ms=1.5, ms_per_mmac=0.03, network_scale=network_scale)
    table = _build(device, tmp_path / "tiny.json", calibration_networks=12, seed=3)
    overhead = table.overhead
    assert overhead is not None and overhead.n_networks == 12
    # The call cost is measured, not fitted; a network pays it once and pooling once, and runs its ops slower.
    assert overhead.call_ms == pytest.approx(0.2, abs=1e-12)
    assert overhead.intercept_ms == pytest.approx(0.2 + 1.5, abs=1e-9)
    assert overhead.scale == pytest.approx(network_scale, abs=1e-9) and overhead.per_op_ms == 0.0
    assert "least squares on relative errors over 12 networks" in overhead.note
    for arch in [(32, 5, 3, 3), (16, 3)]:
        spec, size = SPACE.to_spec(arch)
        ops = list(zoo.iter_ops(spec, size))
        ops_ms = sum(table.entries[o.key].median_ms for o in ops)
        assert overhead.network_ms(len(ops), ops_ms) == pytest.approx(
            device.latency_ms(zoo.build_model(spec), (1, *size)))
        assert ops_ms + overhead.ms(len(ops), ops_ms) == pytest.approx(overhead.network_ms(len(ops), ops_ms))


def test_calibration_networks_are_distinct_and_seeded(tmp_path: Path) -> None:
    first, second = FakeDevice(), FakeDevice()
    _build(first, tmp_path / "a.json", calibration_networks=6, seed=1)
    _build(second, tmp_path / "b.json", calibration_networks=6, seed=1)
    networks = first.calls[len(KEYS) + 1:]
    assert networks == second.calls[len(KEYS) + 1:] and len(set(networks)) == 6


def test_fit_overhead_falls_back_to_the_median_when_the_fit_is_degenerate() -> None:
    same_sum = fit_overhead([10.0, 11.0, 15.0], [9.0, 9.0, 9.0], [8, 8, 8])
    assert same_sum == Overhead(2.0, 0.0, 3, same_sum.note) and "same op sum" in same_sum.note
    few = fit_overhead([10.0, 12.0], [9.0, 9.0], [4, 9], call_ms=0.5)
    assert (few.intercept_ms, few.scale, few.call_ms) == (pytest.approx(5.25), 0.0, 0.5)  # residuals 10-7 and 12-4.5
    assert "only 2 network(s)" in few.note
    with pytest.raises(ValueError, match="equally long"):
        fit_overhead([1.0], [1.0, 2.0], [3])
    with pytest.raises(ValueError, match="call_ms"):
        fit_overhead([1.0], [1.0], [3], call_ms=-0.1)


def test_fit_overhead_recovers_a_line_and_ignores_an_interference_outlier() -> None:
    sums = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    counts = [10, 12, 9, 11, 10, 13, 12, 10]
    call = 0.05
    measured = [0.4 + 1.1 * (s - call * n) for s, n in zip(sums, counts)]
    clean = fit_overhead(measured, sums, counts, call_ms=call)
    assert (clean.intercept_ms, clean.scale) == (pytest.approx(0.4), pytest.approx(0.1))
    measured[3] *= 1.6  # one network caught by another tenant's burst
    noisy = fit_overhead(measured, sums, counts, call_ms=call)
    assert (noisy.intercept_ms, noisy.scale) == (pytest.approx(0.4), pytest.approx(0.1))
    assert "1 outlier(s) dropped" in noisy.note


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        _build(FakeDevice(), tmp_path / "t.json", checkpoint_every=0)
    with pytest.raises(ValueError, match="calibration_networks"):
        _build(FakeDevice(), tmp_path / "t.json", calibration_networks=-1)


def test_a_device_that_overrides_the_thread_count_is_refused(tmp_path: Path) -> None:
    class FourThreads(FakeDevice):
        def measure(self, model, input_shape, cfg, label=""):
            return super().measure(model, input_shape, replace(cfg, threads=4), label)

    with pytest.raises(TableMismatchError, match="with 4 thread.*cfg.threads is 1.*threads=4"):
        _build(FourThreads(), tmp_path / "t.json")


def test_a_pinned_build_resumes_after_its_protocol_went_through_json(tmp_path: Path) -> None:
    pinned = replace(FAST, cpus=(0,))  # saved as a JSON list, rebuilt as a tuple
    path = tmp_path / "tiny.json"
    with pytest.raises(KeyboardInterrupt):
        _build(FakeDevice(interrupt_after=4), path, cfg=pinned)
    table = _build(FakeDevice(), path, cfg=pinned, calibration_networks=3)
    assert table.complete and set(table.entries) == set(KEYS)


def test_entries_the_space_no_longer_produces_are_dropped_and_the_overhead_refitted(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    table = _build(FakeDevice(), path, calibration_networks=3)
    stale = "ir-in99x9x9-out99x9x9-k3-s1-e3-g1-relu"
    replace(table, entries={**table.entries, stale: Entry(1.0, 3)}).save(path)
    device = FakeDevice()
    with pytest.warns(UserWarning, match=f"dropping 1 entries.*{stale}"):
        rebuilt = _build(device, path, calibration_networks=3)
    assert set(rebuilt.entries) == set(KEYS) and rebuilt.complete
    assert device.calls[0] == "runtime-call" and len(device.calls) == 1 + 3  # nothing re-measured but the overhead


def test_a_second_build_of_a_table_being_built_is_refused_naming_the_lock_and_its_pid(tmp_path: Path) -> None:
    import os

    from common.files import LockHeldError

    path = tmp_path / "tiny.json"
    lock = tmp_path / "tiny.json.lock"
    refused: list[str] = []
    second = FakeDevice()

    class First(FakeDevice):
        def measure(self, model, input_shape, cfg, label=""):
            if len(self.calls) == 3:  # `mzoo lut build` of the same table, started while this one runs
                assert lock.read_text().split()[0] == str(os.getpid())
                with pytest.raises(LockHeldError) as info:
                    _build(second, path)
                refused.append(str(info.value))
            return super().measure(model, input_shape, cfg, label)

    table = _build(First(), path, checkpoint_every=1, calibration_networks=3)
    assert refused == [f"latency table {str(path)!r} is in use by process {os.getpid()} (lock file {str(lock)!r}); "
                       "wait for it to finish, or stop that process"]
    assert second.calls == []  # refused before measuring anything
    assert not lock.exists() and LatencyTable.load(path) == table and table.complete


def test_the_lock_of_a_build_that_died_is_taken_over(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "tiny.json.lock").write_text(f"{dead.pid} 0123abcd\n")  # what a kill -9'd build leaves
    assert _build(FakeDevice(), tmp_path / "tiny.json", calibration_networks=0).complete
    assert not (tmp_path / "tiny.json.lock").exists()


def test_an_interrupted_build_never_replaces_a_complete_table_with_its_checkpoint(tmp_path: Path) -> None:
    # Issue #20: a second build (that started before the lock existed, or on another host) was interrupted after
    # the first one finished; its partial checkpoint replaced the complete table and lost the fitted overhead.
    path = tmp_path / "tiny.json"
    complete = _build(FakeDevice(), tmp_path / "done.json", calibration_networks=3)
    with pytest.raises(KeyboardInterrupt):
        _build(FakeDevice(interrupt_after=2), path)

    class Overtaken(FakeDevice):
        def measure(self, model, input_shape, cfg, label=""):
            if len(self.calls) == 3:
                complete.save(path)  # meanwhile the other build finished and wrote the complete table
                raise KeyboardInterrupt
            return super().measure(model, input_shape, cfg, label)

    with pytest.warns(UserWarning, match="already holds a complete table; not replacing it"), \
            pytest.raises(KeyboardInterrupt):
        _build(Overtaken(), path, checkpoint_every=100)
    kept = LatencyTable.load(path)
    assert kept == complete and kept.overhead is not None


def test_recalibrate_keeps_the_entries_and_refits_only_the_overhead(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    first = _build(FakeDevice(network_scale=0.0), path, calibration_networks=6, seed=1)
    slower = FakeDevice(network_scale=0.25)  # the same machine, now running networks 25 % slower
    assert _build(slower, path, calibration_networks=6, seed=1) == first  # a complete table is kept as it is
    again = _build(slower, path, calibration_networks=6, seed=1, recalibrate=True)
    assert again.entries == first.entries and again.created == first.created
    assert again.overhead.scale == pytest.approx(0.25, abs=1e-9) and first.overhead.scale == pytest.approx(0.0)
    measured_ops = [label for label in slower.calls if label in KEYS]
    assert not measured_ops and len(slower.calls) == 1 + 6  # the call cost and the six networks, no op
    assert LatencyTable.load(path) == again
    with pytest.raises(ValueError, match="--recalibrate.*does not exist"):
        _build(slower, tmp_path / "none.json", calibration_networks=6, recalibrate=True)


def test_fit_overhead_never_fits_a_negative_intercept() -> None:
    # Networks of 5-10 ms that run 1.3x their entries less 0.5 ms: an unconstrained line says -0.5 ms for what
    # only a whole network pays, and predicts a 1 ms network at 0.8 ms. Held at 0, the scale takes it up.
    sums = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    measured = [1.3 * s - 0.5 for s in sums]
    overhead = fit_overhead(measured, sums, [10] * len(sums))
    assert overhead.intercept_ms == 0.0
    assert 0.2 < overhead.scale < 0.3  # the ratio of measured to S through the origin, on relative errors:
    ratios = [s / m for m, s in zip(measured, sums)]  # minimises sum(((1 + scale) * S / measured - 1) ** 2)
    assert overhead.scale == pytest.approx(sum(ratios) / sum(r * r for r in ratios) - 1)


def test_fit_overhead_minimises_relative_not_absolute_errors() -> None:
    # Networks of 1.5-14 ms whose timings scatter by a few per cent of their own latency, as machines' do.
    # Absolute least squares lets the largest networks' scatter steer the line; the predictor is judged on
    # relative error (within ±10 %), and so is the fit: no other line has a smaller relative RMS error.
    rng = np.random.default_rng(0)
    sums = np.linspace(1.5, 14.0, 12)
    measured = (0.3 + 1.05 * sums) * (1 + rng.normal(0, 0.05, len(sums)))
    overhead = fit_overhead(measured.tolist(), sums.tolist(), [40] * len(sums))

    def relative_rms(intercept: float, scale: float) -> float:
        return float(np.sqrt(np.mean(((intercept + (1 + scale) * sums - measured) / measured) ** 2)))

    design = np.stack([np.ones(len(sums)), sums], axis=1)
    absolute = np.linalg.lstsq(design, measured - sums, rcond=None)[0]
    assert overhead.intercept_ms > 0 and absolute[0] > 0  # neither line needs the intercept held at 0
    ours = relative_rms(overhead.intercept_ms, overhead.scale)
    assert ours < 0.97 * relative_rms(*absolute)
    for d_intercept, d_scale in [(0.02, 0), (-0.02, 0), (0, 0.005), (0, -0.005), (0.02, -0.005), (-0.02, 0.005)]:
        assert ours < relative_rms(overhead.intercept_ms + d_intercept, overhead.scale + d_scale)
    assert "relative errors" in overhead.note and f"RMS error {100 * ours:.3g} %" in overhead.note


def test_the_calibration_networks_are_kept_in_the_table(tmp_path: Path) -> None:
    table = _build(FakeDevice(), tmp_path / "t.json", calibration_networks=6, seed=1)
    networks = table.overhead.networks
    assert len(networks) == 6 == table.overhead.n_networks and len({n.label for n in networks}) == 6
    assert all(n.measured_ms > 0 and n.n_ops > 0 and n.ops_ms > 0 for n in networks)
    refit = fit_overhead([n.measured_ms for n in networks], [n.ops_ms for n in networks],
                         [n.n_ops for n in networks], table.overhead.call_ms)
    assert (refit.intercept_ms, refit.scale) == (pytest.approx(table.overhead.intercept_ms),
                                                 pytest.approx(table.overhead.scale))
    assert LatencyTable.load(tmp_path / "t.json").overhead.networks == networks
    with pytest.raises(ValueError, match="2 label"):
        fit_overhead([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3, 3, 3], labels=["a", "b"])


def test_a_build_warns_when_an_entry_measured_interference_not_the_op(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # As ExecuTorch timings pinned to a CPU shared with a second OpenMP thread did: one op recorded as a 4 ms
    # scheduler slice. TinySpace's ops are small, so the judged floor comes down to them.
    monkeypatch.setattr("latency_tables.table.IMPLAUSIBLE_MIN_MACS", 50_000)
    slow_key = "ir-in16x8x8-out16x8x8-k3-s1-e3-g1-relu"

    class Sliced(FakeDevice):
        def latency_ms(self, model, input_shape):
            return 4.0 if self.calls[-1] == slow_key else super().latency_ms(model, input_shape)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _build(FakeDevice(), tmp_path / "clean.json", calibration_networks=0)  # a plausible table: no warning
    with pytest.warns(UserWarning, match=f"1 entr.*worst {slow_key}.*quiet machine"):
        table = _build(Sliced(), tmp_path / "sliced.json", calibration_networks=0)
    assert table.entries[slow_key].min_ms == 4.0  # kept, and said: the builder does not guess what it should be


def test_calibration_measures_round_robin_and_fits_each_networks_fastest_round(tmp_path: Path) -> None:
    # A shared VM in phases: every network of rounds 2 and 3 runs 40 % slow (interference only adds time).
    # Measured once, the networks that met the slow phase would tilt the fit, and the median of three rounds would
    # be the slow figure; each network's fastest round is its figure without interference, and the fit recovers
    # the device's costs exactly.
    class Phased(FakeDevice):
        def latency_ms(self, model, input_shape):
            ms = super().latency_ms(model, input_shape)
            networks = sum(1 for c in self.calls if c.startswith("tiny:"))
            return ms * 1.4 if hasattr(model, "forward_head") and networks > 6 else ms  # rounds 2 and 3

    device = Phased(call_ms=0.2, network_ms=1.5, ms_per_mmac=0.03, network_scale=0.1)
    table = _build(device, tmp_path / "t.json", calibration_networks=6, seed=3, calibration_rounds=3)
    labels = [c for c in device.calls if c.startswith("tiny:")]
    assert labels == labels[:6] * 3  # round-robin: every network once per round, in the same order
    overhead = table.overhead
    assert (overhead.intercept_ms, overhead.scale) == (pytest.approx(1.7, abs=1e-9), pytest.approx(0.1, abs=1e-9))
    for net in overhead.networks:
        assert len(net.rounds_ms) == 3 and net.rounds_ms[1:] == pytest.approx([1.4 * net.rounds_ms[0]] * 2)
        assert net.measured_ms == pytest.approx(net.rounds_ms[0])
    assert LatencyTable.load(tmp_path / "t.json").overhead.networks == overhead.networks
    once = _build(Phased(call_ms=0.2, network_ms=1.5, ms_per_mmac=0.03, network_scale=0.1), tmp_path / "o.json",
                  calibration_networks=12, seed=3)
    assert once.overhead.networks[0].rounds_ms == ()
    with pytest.raises(ValueError, match="calibration_rounds"):
        _build(FakeDevice(), tmp_path / "r.json", calibration_rounds=0)


class _SlowFirstPass(FakeDevice):
    """Ops run 1.5x slow in the first pass over the keys (a VM's slow phase), except every third one."""

    def latency_ms(self, model, input_shape):
        ms = super().latency_ms(model, input_shape)
        label = self.calls[-1]
        if label in KEYS and self.calls.count(label) == 1 and list(KEYS).index(label) % 3:
            return 1.5 * ms
        return ms


def test_each_op_keeps_its_fastest_of_several_passes(tmp_path: Path) -> None:
    steady = _build(FakeDevice(), tmp_path / "steady.json", calibration_networks=0)
    device = _SlowFirstPass()
    table = _build(device, tmp_path / "t.json", calibration_networks=0, passes=2)
    op_calls = [c for c in device.calls if c in KEYS]
    assert op_calls == list(KEYS) * 2  # two round-robin passes over every key
    assert {k: e.min_ms for k, e in table.entries.items()} == {k: e.min_ms for k, e in steady.entries.items()}
    assert all(e.passes == 2 for e in table.entries.values())
    once = _build(_SlowFirstPass(), tmp_path / "once.json", calibration_networks=0)
    assert sum(once.entries[k].min_ms > steady.entries[k].min_ms for k in KEYS) == sum(
        1 for i in range(len(KEYS)) if i % 3)  # one pass keeps the slow phase
    assert "passes" not in once.entries[next(iter(KEYS))].to_dict() and LatencyTable.load(tmp_path / "t.json") == table
    with pytest.raises(ValueError, match="passes"):
        _build(FakeDevice(), tmp_path / "p.json", passes=0)


def test_a_complete_table_gets_the_missing_passes_and_a_new_overhead(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    first = _build(_SlowFirstPass(), path, calibration_networks=4)
    assert all(e.passes == 1 for e in first.entries.values())
    device = _SlowFirstPass()
    device.calls.extend(KEYS)  # this device's first pass is over: it runs steady now
    with pytest.raises(KeyboardInterrupt):  # interrupted in the added pass: the checkpoint holds the progress
        _build(replace(device, interrupt_after=len(KEYS) + 5), path, calibration_networks=4, passes=2)
    partial = LatencyTable.load(path)
    assert not partial.complete and sum(e.passes == 2 for e in partial.entries.values()) == 5
    resumed = _SlowFirstPass()
    resumed.calls.extend(KEYS)
    table = _build(resumed, path, calibration_networks=4, passes=2)
    assert [c for c in resumed.calls[len(KEYS):] if c in KEYS] == [k for k in KEYS if partial.entries[k].passes < 2]
    assert table.complete and all(e.passes == 2 for e in table.entries.values())
    assert all(table.entries[k].min_ms <= first.entries[k].min_ms for k in KEYS)
    assert table.overhead is not None and table.overhead.networks != first.overhead.networks  # fitted again
    again = FakeDevice()
    assert _build(again, path, calibration_networks=4, passes=2) == table and again.calls == []
