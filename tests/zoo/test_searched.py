"""Search results registered as zoo models: spec + weights + report in, a timm-style model with its weights out.

Registering changes the process's registry (and timm's), which other tests enumerate, so every registration here
runs in a fresh interpreter, as a user's `mzoo --searched DIR` or script would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.nbmacro import nbmacro_spec
from zoo.searched import SearchedModelError, register_searched

ROOT = Path(__file__).resolve().parents[2]


def make_result(directory: Path, name: str = "nbmacro_found_1", seed: int = 3) -> Path:
    spec = nbmacro_spec("21100120")
    torch.manual_seed(seed)
    model = zoo.build_model(spec)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.json").write_text(spec.to_json())
    torch.save(model.state_dict(), directory / "weights.pth")
    (directory / "report.json").write_text(json.dumps({"name": name, "input_size": [3, 32, 32], "method": "mctnas",
                                                       "space": "nbmacro", "macs": zoo.count(spec, 32).macs}))
    return directory


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_registered_result_builds_with_its_weights_in_zoo_and_timm(tmp_path: Path) -> None:
    result = make_result(tmp_path / "found")
    code = f"""
import torch, timm, zoo
from zoo.searched import register_searched
name = register_searched({str(result)!r})
ours = zoo.create_model(name, pretrained=True).eval()
theirs = timm.create_model(name, pretrained=True).eval()
reference = zoo.build_model(zoo.spec_from_json(open({str(result / 'spec.json')!r}).read())).eval()
reference.load_state_dict(torch.load({str(result / 'weights.pth')!r}))
x = torch.randn(2, 3, 32, 32)
assert torch.equal(ours(x), reference(x)) and torch.equal(theirs(x), reference(x))
cfg = zoo.get_pretrained_cfg(name)
assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and cfg.paper_ids == "arXiv:2103.11922"
assert name in zoo.list_models("nbmacro_found*")
print("ok", name)
"""
    done = _python(code, ROOT)
    assert done.returncode == 0 and "ok nbmacro_found_1" in done.stdout, done.stderr[-2000:]


def test_the_cli_registers_results_and_refuses_changed_weights(tmp_path: Path) -> None:
    result = make_result(tmp_path / "found", name="nbmacro_found_2")
    mzoo = [sys.executable, "-m", "mzoo"]
    info = subprocess.run(mzoo + ["--searched", str(tmp_path), "info", "nbmacro_found_2"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert info.returncode == 0 and "zoo.searched" in info.stdout and "(3, 32, 32)" in info.stdout, info.stderr
    # The weights' sha256 is pinned when registering: a file swapped afterwards is refused by name.
    code = f"""
import torch, zoo
from zoo.searched import register_searched
name = register_searched({str(result)!r})
torch.save({{k: v + 1 for k, v in torch.load({str(result / 'weights.pth')!r}).items()}}, {str(result / 'weights.pth')!r})
try:
    zoo.create_model(name, pretrained=True)
except zoo.WeightsHashError as err:
    print("refused:", err)
"""
    done = _python(code, ROOT)
    assert "refused:" in done.stdout and "sha256" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("breakage, message", [
    ("no_spec", "has no spec.json"),
    ("no_weights", "has no weights.pth"),
    ("corrupt_report", "not valid JSON"),
    ("bad_name", "must be lowercase"),
    ("no_input_size", "input_size"),
])
def test_broken_results_are_refused_naming_the_problem(tmp_path: Path, breakage: str, message: str) -> None:
    result = make_result(tmp_path / "found", name="nbmacro_never_registered")
    report = json.loads((result / "report.json").read_text())
    if breakage == "no_spec":
        (result / "spec.json").unlink()
    elif breakage == "no_weights":
        (result / "weights.pth").unlink()
    elif breakage == "corrupt_report":
        (result / "report.json").write_text('{"name": "x", "input_si')
    elif breakage == "bad_name":
        (result / "report.json").write_text(json.dumps(report | {"name": "Bad-Name"}))
    else:
        (result / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "input_size"}))
    with pytest.raises(SearchedModelError, match=message):
        register_searched(result)
    assert not zoo.is_model("nbmacro_never_registered")
