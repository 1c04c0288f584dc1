"""The predictor: look-up-and-sum plus the calibrated overhead, missing keys, interpolation between measured widths."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

import zoo
from latency_tables import (Entry, LatencyTable, MissingKeysError, NoTablesError, Overhead, Predictor, op_signature,
                            table_path)
from zoo.spaces import op_keys
from tests.latency_tables import ENVIRONMENT, FAST, FakeDevice, TinySpace
from zoo.ops import op_module

DEVICE = FakeDevice()
SPACE = TinySpace()
# What the builder's calibration recovers on FakeDevice (tested in test_build.py).
OVERHEAD = Overhead(DEVICE.call_ms + DEVICE.network_ms, -DEVICE.call_ms, 10, "known")


def make_table(space: TinySpace = SPACE, device: FakeDevice = DEVICE, overhead: Overhead | None = OVERHEAD,
               complete: bool = True) -> LatencyTable:
    entries = {key: Entry(ms, 3, macs=op.macs, params=op.params, kind=op.kind, min_ms=ms)
               for key, op in op_keys(space).items() for ms in [device.latency_ms(*op_module(op))]}
    return LatencyTable(device=device.name, space=space.name, source="measured", runtime=device.runtime,
                        runtime_version=device.runtime_version, threads=1, dtype="float32", batch_size=1,
                        protocol=asdict(FAST), environment=ENVIRONMENT.to_dict(), fingerprint=device.fingerprint,
                        created="2025-01-01T00:00:00+00:00", input_sizes=((3, space.size, space.size),),
                        entries=entries, overhead=overhead, complete=complete)


def network_ms(spec: zoo.ArchSpec, size: tuple[int, int, int]) -> float:
    return DEVICE.latency_ms(zoo.build_model(spec), (1, *size))


def test_prediction_is_the_sum_of_entries_plus_overhead() -> None:
    table = make_table()
    spec, size = SPACE.to_spec((16, 3, 5))
    prediction = Predictor([table]).predict(spec, size)
    ops = list(zoo.iter_ops(spec, size))
    by_hand = sum(table.entries[op.key].median_ms for op in ops)
    assert [(p.name, p.key) for p in prediction.ops] == [(op.name, op.key) for op in ops]
    assert [p.ms for p in prediction.ops] == [table.entries[op.key].median_ms for op in ops]
    assert prediction.ops_ms == pytest.approx(by_hand)
    assert prediction.overhead_ms == pytest.approx(OVERHEAD.intercept_ms + OVERHEAD.per_op_ms * len(ops))
    assert prediction.total_ms == pytest.approx(by_hand + prediction.overhead_ms)
    assert prediction.overhead_table == "tiny" and prediction.complete and prediction.interpolated_keys == ()
    # With the calibrated overhead the prediction is the device's end-to-end latency.
    assert prediction.total_ms == pytest.approx(network_ms(spec, size))


def test_predict_arch_uses_the_spaces_table() -> None:
    other = make_table(TinySpace(name="other"), overhead=Overhead(9.0, 0.0, 3))
    predictor = Predictor([other, make_table()])
    prediction = predictor.predict_arch(SPACE, (32, 5))
    assert prediction.overhead_table == "tiny"
    assert prediction.total_ms == pytest.approx(network_ms(*SPACE.to_spec((32, 5))))
    assert predictor.predict(*SPACE.to_spec((32, 5)), space="other").overhead_ms == 9.0
    with pytest.raises(LookupError, match="no latency table for space 'nbmacro'.*tables: other, tiny"):
        predictor.predict(*SPACE.to_spec((32, 5)), space="nbmacro")


def test_overhead_comes_from_the_table_covering_most_keys() -> None:
    narrow = make_table(TinySpace(name="narrow", widths=(16,), kernels=(3,)), overhead=Overhead(5.0, 0.0, 3))
    full = make_table(TinySpace(name="full"), overhead=Overhead(7.0, 0.0, 3))
    predictor = Predictor([narrow, full])
    assert predictor.predict(*SPACE.to_spec((32, 3))).overhead_table == "full"  # narrow lacks width 32
    assert predictor.predict(*SPACE.to_spec((16, 3, 5))).overhead_table == "full"  # narrow lacks k5
    narrow_only = predictor.predict(*SPACE.to_spec((16, 3)))  # both cover it: ties go to the first by name
    assert (narrow_only.overhead_table, narrow_only.overhead_ms) == ("full", 7.0)


def test_missing_keys_are_named_with_their_count_and_the_fix() -> None:
    spec, size = TinySpace(widths=(24,)).to_spec((24, 3, 5))
    with pytest.raises(MissingKeysError) as info:
        Predictor([make_table()]).predict(spec, size)
    missing = [op.key for op in zoo.iter_ops(spec, size) if "24" in op.key]
    assert isinstance(info.value, LookupError)
    assert info.value.keys == tuple(missing) and len(missing) == 3
    message = str(info.value)
    assert message.startswith("3 op key(s)") and missing[0] in message and "fake-cpu-t1" in message
    assert "build_table" in message and "interpolate=True" in message and "\n" not in message


def test_interpolated_width_lands_between_its_measured_neighbours_and_is_flagged() -> None:
    table = make_table()
    spec, size = TinySpace(widths=(24,)).to_spec((24, 3, 5))
    prediction = Predictor([table]).predict(spec, size, interpolate=True)
    missing = tuple(op.key for op in zoo.iter_ops(spec, size) if op.key not in table.entries)
    assert prediction.interpolated_keys == missing
    for op in prediction.ops:
        assert op.interpolated == (op.key in missing) and not op.extrapolated
        if op.interpolated:
            low = table.entries[op.key.replace("24", "16")].median_ms
            high = table.entries[op.key.replace("24", "32")].median_ms
            assert low < op.ms < high
    # FakeDevice is linear in MACs, so interpolating in MACs is exact.
    assert prediction.total_ms == pytest.approx(network_ms(spec, size))


def test_beyond_the_measured_range_the_estimate_is_clamped_and_said() -> None:
    table = make_table()
    key16, key32 = "linear-in16x1x1-out10x1x1-k1-s1-e1-g1-identity", "linear-in32x1x1-out10x1x1-k1-s1-e1-g1-identity"
    # A wider op that measured faster: following the line would predict less for an even wider one.
    entries = dict(table.entries) | {key16: replace(table.entries[key16], median_ms=0.5, min_ms=0.5),
                                     key32: replace(table.entries[key32], median_ms=0.2, min_ms=0.2)}
    predictor = Predictor([replace(table, entries=entries)])
    prediction = predictor.predict(*TinySpace(widths=(32, 64)).to_spec((64, 3)), interpolate=True)
    (wide,) = [p for p in prediction.ops if p.key.startswith("linear-in64")]
    assert wide.interpolated and wide.extrapolated and wide.ms == 0.2
    assert any("clamped" in note and wide.key in note for note in prediction.notes)


def test_a_key_with_no_measured_signature_is_still_an_error() -> None:
    spec, size = TinySpace(kernels=(7,)).to_spec((16, 7))
    with pytest.raises(MissingKeysError) as info:
        Predictor([make_table()]).predict(spec, size, interpolate=True)
    (key,) = info.value.keys
    assert "-k7-" in key and key in str(info.value) and "no measured entry shares" in str(info.value)


def test_signature_drops_only_channel_counts_and_spatial_size() -> None:
    a = "ir-in16x56x56-out24x28x28-k3-s2-e6-g1-relu6-m96-se0.25mid1relu6hsigmoid"
    b = "ir-in32x14x14-out40x7x7-k3-s2-e6-g1-relu6-m192-se0.25mid1relu6hsigmoid"
    assert op_signature(a) == op_signature(b) == "ir-k3-s2-e6-g1-relu6-m*-se0.25mid1relu6hsigmoid"
    assert op_signature(a) != op_signature(a.replace("-k3-", "-k5-"))
    assert op_signature(a) != op_signature(a.replace("-e6-", "-e3-"))
    assert op_signature("hgc_ir-in8x8x8-out8x8x8-k3-s1-e6-g4-relu6-i8x16") == "hgc_ir-k3-s1-e6-g4-relu6-i*x*"
    assert op_signature("ofa-unrelated-key") is None


def test_incomplete_table_predicts_but_warns() -> None:
    predictor = Predictor([make_table(complete=False, overhead=None)])
    with pytest.warns(UserWarning, match="incomplete"):
        prediction = predictor.predict(*SPACE.to_spec((16, 3)))
    assert not prediction.complete and prediction.overhead_ms == 0.0 and prediction.overhead_table is None
    assert any("no calibrated overhead" in note for note in prediction.notes)


def test_tables_of_several_devices_are_refused() -> None:
    with pytest.raises(ValueError, match="one device"):
        Predictor([make_table(), make_table(TinySpace(name="x"), device=FakeDevice(name="phone"))])
    with pytest.raises(ValueError, match="at least one"):
        Predictor([])


def test_for_device_reads_the_devices_tables(tmp_path: Path) -> None:
    make_table().save(table_path(DEVICE.name, "tiny", tmp_path))
    predictor = Predictor.for_device(DEVICE, root=tmp_path)
    assert [t.space for t in predictor.tables] == ["tiny"]
    assert Predictor.for_device(DEVICE.name, tmp_path).predict_arch(SPACE, (16, 5)).total_ms == pytest.approx(
        network_ms(*SPACE.to_spec((16, 5))))
    with pytest.raises(NoTablesError, match="'pixel-9'"):
        Predictor.for_device("pixel-9", root=tmp_path)
