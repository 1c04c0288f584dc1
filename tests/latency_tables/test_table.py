"""Latency table files: JSON round trip, atomic sorted writes, refusal of corrupt files and unknown versions."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from latency_tables import (TABLE_SCHEMA_VERSION, Entry, LatencyTable, LatencyTableError, NoTablesError, Overhead,
                            TableVersionError, list_devices, load_tables, table_path, tables_root)
from latency_tables.table import implausible_entries
from tests.latency_tables import ENVIRONMENT, FAST


def make_table(device: str = "fake-cpu-t1", space: str = "tiny", complete: bool = True) -> LatencyTable:
    entries = {
        "conv-in3x16x16-out8x16x16-k3-s1-e1-g1-relu": Entry(0.25, 7, 0.2, 0.3, 0.01, macs=55296, params=232,
                                                            kind="conv"),
        "linear-in16x1x1-out10x1x1-k1-s1-e1-g1-identity": Entry(0.125, 5, kind="linear"),
    }
    return LatencyTable(device=device, space=space, source="measured", runtime="onnxruntime-cpu",
                        runtime_version="1.23.0", threads=1, dtype="float32", batch_size=1, protocol=asdict(FAST),
                        environment=ENVIRONMENT.to_dict(), fingerprint="fp-1", created="2025-01-01T00:00:00+00:00",
                        input_sizes=((3, 16, 16), (3, 32, 32)), entries=entries,
                        overhead=Overhead(0.5, 0.0, 20, "fit", scale=0.1, call_ms=0.02), complete=complete,
                        notes="n")


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    table = make_table()
    path = table.save(tmp_path / "d" / "tiny.json")
    loaded = LatencyTable.load(path)
    assert loaded == table
    assert loaded.to_dict() == table.to_dict()
    assert loaded.entries["linear-in16x1x1-out10x1x1-k1-s1-e1-g1-identity"].p10_ms is None
    assert loaded.input_sizes == ((3, 16, 16), (3, 32, 32))
    assert loaded.overhead is not None
    assert loaded.overhead.network_ms(10, 3.0) == pytest.approx(0.5 + 1.1 * (3.0 - 0.2))


def test_schema_1_tables_still_read_with_their_meaning(tmp_path: Path) -> None:
    data = make_table().to_dict()
    data["schema_version"] = 1
    data["overhead"] = {"intercept_ms": 0.5, "per_op_ms": -0.04, "n_networks": 20, "note": "fit"}
    table = LatencyTable.load(_write(tmp_path / "old.json", data))
    assert table.schema_version == 1 and (table.overhead.scale, table.overhead.call_ms) == (0.0, 0.0)
    assert table.overhead.ms(10, 3.0) == pytest.approx(0.5 - 0.4)  # schema 1: intercept + per_op x n


@pytest.mark.parametrize("bad", [{"call_ms": -0.1}, {"scale": -1.0}, {"scale": float("inf")}])
def test_overhead_refuses_impossible_values(bad: dict) -> None:
    with pytest.raises(LatencyTableError, match=next(iter(bad))):
        Overhead(0.5, 0.0, 3, **bad)


def test_saved_file_is_versioned_sorted_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "tiny.json")
    text = path.read_text()
    data = json.loads(text)
    assert data["schema_version"] == TABLE_SCHEMA_VERSION
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.json"]


def test_table_is_read_only() -> None:
    table = make_table()
    with pytest.raises(TypeError):
        table.entries["x"] = Entry(1.0, 1)  # type: ignore[index]
    with pytest.raises(TypeError):
        table.protocol["threads"] = 4  # type: ignore[index]


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("version", [TABLE_SCHEMA_VERSION + 1, 0, "1", None, True])
def test_unknown_version_is_refused_naming_file_and_version(tmp_path: Path, version: object) -> None:
    data = make_table().to_dict()
    data["schema_version"] = version
    path = _write(tmp_path / "future.json", data)
    with pytest.raises(TableVersionError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert str(path) in message and repr(version) in message and "\n" not in message


def test_missing_version_is_refused(tmp_path: Path) -> None:
    data = make_table().to_dict()
    del data["schema_version"]
    with pytest.raises(TableVersionError, match="schema_version None"):
        LatencyTable.load(_write(tmp_path / "old.json", data))


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "tiny.json")
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value) and "not valid JSON" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="nowhere.json.*does not exist"):
        LatencyTable.load(tmp_path / "nowhere.json")


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.pop("device"), "missing field(s) ['device']"),
    (lambda d: d.pop("entries"), "missing field(s) ['entries']"),
    (lambda d: d.update(colour="blue"), "unknown field(s) ['colour']"),
    (lambda d: d["entries"]["conv-in3x16x16-out8x16x16-k3-s1-e1-g1-relu"].pop("median_ms"),
     "entry 'conv-in3x16x16-out8x16x16-k3-s1-e1-g1-relu': entry is missing field(s) ['median_ms']"),
    (lambda d: d["entries"]["conv-in3x16x16-out8x16x16-k3-s1-e1-g1-relu"].update(median_ms=-1.0), "median_ms"),
    (lambda d: d["entries"]["conv-in3x16x16-out8x16x16-k3-s1-e1-g1-relu"].update(median_ms="fast"), "median_ms"),
    (lambda d: d.update(input_sizes=[[3, 16]]), "input size [3, 16]"),
    (lambda d: d.update(overhead={"intercept_ms": 1.0}), "overhead is missing field(s)"),
    (lambda d: d.update(threads=0), "threads"),
    (lambda d: d.update(complete="yes"), "complete"),
    (lambda d: d.update(entries=[]), "'entries' must be an object"),
])
def test_corrupt_content_is_one_line_naming_file_and_problem(tmp_path: Path, mutate, expected: str) -> None:
    data = make_table().to_dict()
    mutate(data)
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="must hold a JSON object"):
        LatencyTable.load(_write(tmp_path / "list.json", [1, 2]))


def test_paths_and_root_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert table_path("amd-epyc-ort-t1", "nbmacro", tmp_path) == tmp_path / "amd-epyc-ort-t1" / "nbmacro.json"
    monkeypatch.delenv("MZOO_LATENCY_TABLES", raising=False)
    assert tables_root() == Path(__file__).resolve().parents[2] / "latency_tables"
    monkeypatch.setenv("MZOO_LATENCY_TABLES", str(tmp_path))
    assert tables_root() == tmp_path
    assert table_path("dev", "space") == tmp_path / "dev" / "space.json"
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="is not a valid name"):
            table_path(bad, "nbmacro", tmp_path)


def test_list_and_load_tables_of_a_device(tmp_path: Path) -> None:
    make_table(space="tiny").save(table_path("fake-cpu-t1", "tiny", tmp_path))
    make_table(space="alpha", complete=False).save(table_path("fake-cpu-t1", "alpha", tmp_path))
    make_table(device="phone").save(table_path("phone", "tiny", tmp_path))
    (tmp_path / "fake-cpu-t1" / ".tiny.json.abc.tmp").write_text("{half a wri")  # an atomic write in flight
    (tmp_path / "empty-device").mkdir()
    assert list_devices(tmp_path) == ["fake-cpu-t1", "phone"]
    tables = load_tables("fake-cpu-t1", tmp_path)
    assert [(t.space, t.complete) for t in tables] == [("alpha", False), ("tiny", True)]
    assert list_devices(tmp_path / "nothing-here") == []


def test_unknown_device_lists_known_ones(tmp_path: Path) -> None:
    make_table().save(table_path("fake-cpu-t1", "tiny", tmp_path))
    with pytest.raises(NoTablesError, match="'pixel-9'.*devices with tables: fake-cpu-t1"):
        load_tables("pixel-9", tmp_path)


def test_table_whose_path_disagrees_with_its_content_is_refused(tmp_path: Path) -> None:
    make_table(device="phone").save(table_path("fake-cpu-t1", "tiny", tmp_path))
    with pytest.raises(LatencyTableError, match="holds device 'phone'.*path says 'fake-cpu-t1'"):
        load_tables("fake-cpu-t1", tmp_path)


def test_constructor_validates_names_and_values() -> None:
    with pytest.raises(LatencyTableError, match="device"):
        replace(make_table(), device="a/b")
    with pytest.raises(LatencyTableError, match="n must be an int"):
        Entry(1.0, n=-1)
    with pytest.raises(LatencyTableError, match="intercept_ms"):
        Overhead(float("nan"), 0.0, 3)


def test_an_overhead_with_kind_scales_round_trips_and_needs_the_kinds_to_price() -> None:
    plain = Overhead(0.5, 0.0, 10, "fit", scale=0.2, call_ms=0.01)
    assert "kind_scales" not in plain.to_dict()  # files without kind scales stay as they were
    assert Overhead.from_dict(plain.to_dict()) == plain
    scaled = Overhead(0.5, 0.0, 10, "fit", scale=0.2, call_ms=0.01, kind_scales={"hgc_ir": 0.15})
    assert Overhead.from_dict(json.loads(json.dumps(scaled.to_dict()))) == scaled
    kinds = {"hgc_ir": (4, 2.0), "conv": (2, 1.0)}
    base = 0.5 + 1.2 * (3.0 - 0.01 * 6)
    assert scaled.network_ms(6, 3.0, kinds) == pytest.approx(base + 0.15 * (2.0 - 0.01 * 4))
    assert scaled.network_ms(6, 3.0, {"conv": (6, 3.0)}) == pytest.approx(base)  # no HGC op: no extra
    with pytest.raises(LatencyTableError, match="kind_ops"):
        scaled.network_ms(6, 3.0)
    with pytest.raises(LatencyTableError, match="kind_scales"):
        Overhead(0.5, 0.0, 10, kind_scales={"hgc_ir": float("nan")})


def _convs(ms_per_mmac: dict[int, float], kind: str = "conv") -> dict[str, Entry]:
    """One 1x1-conv entry per MAC count, taking ``ms_per_mmac`` ms per million MACs."""
    return {f"{kind}-in{c}x28x28-out{c}x28x28-k1-s1-e1-g1-relu": Entry(r * c * c * 784 / 1e6, 10, kind=kind,
                                                                       macs=c * c * 784, min_ms=r * c * c * 784 / 1e6)
            for c, r in ms_per_mmac.items()}


def test_an_entry_far_slower_per_mac_than_its_kind_is_implausible() -> None:
    # The scheduler-slice defect: a 0.1 ms op recorded as a 4 ms slice, 60x its peers per MAC.
    rates = {c: 0.1 * (1 + (c % 5) / 10) for c in range(40, 200, 16)}  # ten ops, within 1.4x of each other
    assert implausible_entries(_convs(rates)) == []
    slow = {**rates, 120: 8.0}
    found = implausible_entries(_convs(slow))
    assert [k for k, _ in found] == ["conv-in120x28x28-out120x28x28-k1-s1-e1-g1-relu"]
    assert found[0][1] > 30
    assert implausible_entries(_convs(slow), factor=100.0) == []


def test_each_kind_is_judged_against_its_own_median() -> None:
    # HGC blocks run many times slower per MAC than dense convs on every runtime here; that is not interference.
    entries = {**_convs({c: 0.1 for c in range(40, 200, 16)}),
               **_convs({c: 5.0 for c in range(40, 200, 16)}, kind="hgc_ir")}
    assert implausible_entries(entries) == []
    entries.update(_convs({136: 500.0}, kind="hgc_ir"))
    assert [k for k, _ in implausible_entries(entries)] == ["hgc_ir-in136x28x28-out136x28x28-k1-s1-e1-g1-relu"]


def test_small_ops_and_small_tables_are_not_judged() -> None:
    # Below a million MACs a runtime call's fixed cost dominates, so ms per MAC legitimately varies; fewer than
    # five comparable entries of a kind give no median to judge by.
    entries = _convs({c: 0.1 for c in range(40, 200, 16)})
    entries["linear-in16x1x1-out10x1x1-k1-s1-e1-g1-identity"] = Entry(0.05, 5, kind="linear", macs=160, min_ms=0.05)
    assert implausible_entries(entries) == []
    assert implausible_entries(_convs({40: 0.1, 56: 0.1, 72: 8.0})) == []
