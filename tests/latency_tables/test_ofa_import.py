"""Importing OFA's Note10 lookup tables: every op of ours is found, and sums agree with OFA's own way of summing."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml

import zoo
from common.images import shared_data_dir
from latency_tables.ofa import (OFA_DATA_DIR, OFA_DEVICE, OFA_SOURCE, OFA_SPACE, OfaImport, OfaImportError,
                                convert_ofa_tables, covering_specs, import_ofa_tables, ofa_key)
from latency_tables.predict import Predictor
from latency_tables.table import load_tables
from zoo.ofa import DEPTHS, EXPANDS, KERNELS, RESOLUTIONS, ofa_mbv3_spec

SRC = shared_data_dir() / OFA_DATA_DIR
pytestmark = pytest.mark.skipif(not SRC.is_dir(), reason=f"OFA lookup tables not found at {SRC}")


def _yaml(res: int) -> dict[str, dict]:
    return yaml.safe_load((SRC / f"{res}_lookup_table.yaml").read_text())


@pytest.fixture(scope="module")
def converted() -> OfaImport:
    return convert_ofa_tables(SRC)


@pytest.fixture(scope="module")
def raw() -> dict[int, dict[str, dict]]:
    return {res: _yaml(res) for res in RESOLUTIONS}


def _ofa_style_sum(lut: dict[str, float], ks: list[int], e: list[int], d: list[int], r: int) -> float:
    """OFA's MBv3 latency-table sum (stem + blocks + Conv_1 + AvgPool2D + Conv_2 + Logits), written from its
    key syntax and its ``(fsize - 1) // stride + 1`` walk, independently of our walker."""
    widths, strides, hs, se = (32, 48, 96, 136, 192), (2, 2, 2, 1, 2), (0, 0, 1, 1, 1), (0, 1, 0, 1, 1)
    f = (r + 1) // 2
    total = lut[f"Conv-input:{r}x{r}x3-output:{f}x{f}x24"]
    total += lut[f"expanded_conv-input:{f}x{f}x24-output:{f}x{f}x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0"]
    c = 24
    for i in range(20):
        stage = i // 4
        if i % 4 + 1 > d[stage]:
            continue
        stride, idskip = (strides[stage], 0) if i % 4 == 0 else (1, 1)
        out, of = widths[stage], (f - 1) // stride + 1
        mid = c * e[i]  # every width is a multiple of 8, so OFA's rounding leaves it
        total += lut[f"expanded_conv-input:{f}x{f}x{c}-output:{of}x{of}x{out}-expand:{mid}-kernel:{ks[i]}"
                     f"-stride:{stride}-idskip:{idskip}-se:{se[stage]}-hs:{hs[stage]}"]
        c, f = out, of
    total += lut[f"Conv_1-input:{f}x{f}x192-output:{f}x{f}x1152"]
    total += lut[f"AvgPool2D-input:{f}x{f}x1152-output:1x1x1152"]
    total += lut["Conv_2-input:1x1x1152-output:1x1x1536"]
    return total + lut["Logits-input:1x1x1536-output:1000"]


def test_every_key_of_ours_is_found_at_every_resolution(converted: OfaImport, raw: dict[int, dict]) -> None:
    table = converted.table
    assert (table.device, table.space, table.source) == (OFA_DEVICE, OFA_SPACE, OFA_SOURCE)
    assert table.input_sizes == tuple((3, r, r) for r in RESOLUTIONS) and table.complete
    assert (table.overhead.intercept_ms, table.overhead.per_op_ms) == (0.0, 0.0)
    assert "not percentiles" in table.notes
    for res in RESOLUTIONS:
        for spec in covering_specs():
            for op in zoo.iter_ops(spec, res):
                entry = table.entries[op.key]
                assert (entry.macs, entry.params, entry.kind) == (op.macs, op.params, op.kind)
                assert ofa_key(op) in raw[res]
    # Nothing of OFA's is left over, and the mapping is one to one: as many keys as OFA's distinct keys.
    assert converted.unused == ()
    assert len(table.entries) == len({k for lut in raw.values() for k in lut})


def test_sums_match_ofa_style_sums_from_the_yaml(converted: OfaImport, raw: dict[int, dict]) -> None:
    # The same op measured in several resolution files is pooled (count-weighted), so the independent sum
    # pools the YAML the same way; the per-resolution sum (OFA's own number) must stay close.
    runs: dict[str, list[tuple[int, float]]] = {}
    for lut in raw.values():
        for key, v in lut.items():
            runs.setdefault(key, []).append((v["count"], v["mean"]))
    pooled = {k: sum(n * m for n, m in r) / sum(n for n, _ in r) for k, r in runs.items()}
    predictor = Predictor([converted.table])
    rng = random.Random(0)
    worst = 0.0
    for _ in range(12):
        ks = [rng.choice(KERNELS) for _ in range(20)]
        e = [rng.choice(EXPANDS) for _ in range(20)]
        d = [rng.choice(DEPTHS) for _ in range(5)]
        r = rng.choice(RESOLUTIONS)
        spec = ofa_mbv3_spec(ks, e, d)
        ours = sum(converted.table.entries[op.key].median_ms for op in zoo.iter_ops(spec, r))
        assert ours == pytest.approx(_ofa_style_sum(pooled, ks, e, d, r), rel=1e-12)
        assert predictor.predict(spec, (3, r, r)).total_ms == pytest.approx(ours, rel=1e-12)
        per_res = _ofa_style_sum({k: v["mean"] for k, v in raw[r].items()}, ks, e, d, r)
        worst = max(worst, abs(ours - per_res) / per_res)
    assert worst < 0.005  # measured: at most 0.19 % over 200 random archs


def test_pooled_entry_statistics(converted: OfaImport, raw: dict[int, dict]) -> None:
    op = next(op for op in zoo.iter_ops(next(covering_specs()), 224) if op.name == "classifier")
    entry = converted.table.entries[op.key]
    runs = [lut["Logits-input:1x1x1536-output:1000"] for lut in raw.values()]
    assert entry.n == sum(v["count"] for v in runs)
    assert min(v["mean"] for v in runs) < entry.median_ms < max(v["mean"] for v in runs)
    # The pooled std is at least the smallest file's std and includes the spread between file means.
    assert entry.std_ms >= min(v["std"] for v in runs)
    assert converted.pooled > 0 and 0 < converted.max_spread < 0.05


def test_import_writes_one_loadable_table(tmp_path: Path) -> None:
    src = tmp_path / "lut"
    src.mkdir()
    shutil.copy(SRC / "224_lookup_table.yaml", src)
    table = import_ofa_tables(src, root=tmp_path / "tables")
    assert (tmp_path / "tables" / OFA_DEVICE / f"{OFA_SPACE}.json").is_file()
    [loaded] = load_tables(OFA_DEVICE, tmp_path / "tables")
    assert loaded.to_dict() == table.to_dict()
    assert loaded.input_sizes == ((3, 224, 224),) and len(loaded.entries) == len(_yaml(224))


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(OfaImportError, match="nowhere.*does not exist"):
        convert_ofa_tables(tmp_path / "nowhere")
    with pytest.raises(OfaImportError, match="no <res>_lookup_table.yaml"):
        convert_ofa_tables(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("{not: [yaml", "cannot read OFA lookup table .*160_lookup_table.yaml"),
    ("- a list\n", "160_lookup_table.yaml.*not a non-empty mapping"),
    ("Warp-input:1x1x1-output:1x1x1: {count: 1, mean: 1.0, std: 0.1}\n", "cannot parse key 'Warp-input"),
    ("Conv_2-input:1x1x1152-output:1x1x1536: {count: 0, mean: 1.0, std: 0.1}\n", "Conv_2.*count 0"),
    ("Conv_2-input:1x1x1152-output:1x1x1536: {count: 3, mean: .nan, std: 0.1}\n", "Conv_2.*mean nan"),
    ("Conv-input:224x224x3-output:112x112x24: {count: 3, mean: 1.0, std: 0.1}\n", "resolution 160.*stem key"),
])
def test_bad_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "160_lookup_table.yaml").write_text(text)
    with pytest.raises(OfaImportError, match=message):
        convert_ofa_tables(tmp_path)


def test_an_op_without_ofa_entry_is_named(tmp_path: Path) -> None:
    lut = _yaml(160)
    gone = "Conv_1-input:5x5x192-output:5x5x1152"
    del lut[gone]
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump(lut))
    with pytest.raises(OfaImportError, match=f"1 op\\(s\\) of ours .*conv-in192x5x5-out1152x5x5.*{gone}"):
        convert_ofa_tables(tmp_path)


def test_unused_ofa_entries_are_counted(tmp_path: Path) -> None:
    lut = _yaml(160) | {"Logits-input:1x1x1536-output:10": {"count": 5, "mean": 0.1, "std": 0.01}}
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump(lut))
    converted = convert_ofa_tables(tmp_path)
    assert converted.unused == ((160, "Logits-input:1x1x1536-output:10"),)
    assert "1 OFA entries map to no op of ours" in converted.table.notes


def test_ops_outside_ofa_format_are_refused() -> None:
    op = next(op for op in zoo.iter_ops(zoo.get_arch_spec("mctnas_a"), 224) if op.block is not None and op.block.se)
    with pytest.raises(OfaImportError, match="no counterpart in OFA"):
        ofa_key(op)
