"""What the command line imports before it does anything: `--help`, `list`, `info` and argument errors must answer
without torch, timm, numpy or any runtime (each costs seconds), and `import zoo` keeps its timm contract lazily.

Each check runs in a fresh interpreter with an import blocker, so it asserts what is imported, never how long it
took on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "timm", "numpy", "onnx", "onnxruntime", "torchvision", "PIL", "tqdm", "scipy", "executorch",
         "coremltools", "matplotlib")

BLOCKER = textwrap.dedent(f"""
    import sys
    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ImportError(f"heavy import: {{name}}")
            return None
    sys.meta_path.insert(0, _Blocker())
""")


def run_python(code: str, *, block: bool = True) -> subprocess.CompletedProcess[str]:
    source = (BLOCKER if block else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [
    ["--help"], ["list"], ["list", "hgcnet*"], ["info", "hgcnet_1x"], ["info", "--ops", "mobilenetv2_100"],
    ["info", "no_such_model"], ["export", "--help"], ["search", "width", "--help"], ["search", "eoinas", "--help"],
    ["agent", "--help"], ["predict", "--help"], ["lut", "--help"], ["train", "--help"], ["prune", "--help"],
    ["inspect", "--help"], ["eval", "--help"],
    ["bench", "--no-such-flag"], ["export"],
])
def test_cli_answers_without_heavy_imports(argv: list[str]) -> None:
    result = run_python(f"""
        from mzoo.cli import main
        try:
            code = main({argv!r})
        except SystemExit as exit:
            code = exit.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print("RESULT", code, heavy)
    """)
    assert "heavy import" not in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT")]
    assert line, result.stdout[-2000:] + result.stderr[-2000:]
    assert line[0].endswith("[]")


def test_list_and_info_give_the_same_answers_without_torch() -> None:
    """The light path is the real one: the walker's counts with torch blocked equal those with torch loaded."""
    code = """
        import json, zoo
        print(json.dumps({n: [zoo.model_info(n)["params"], zoo.model_info(n)["macs"]] for n in zoo.list_models()}))
    """
    light, full = run_python(code), run_python("import torch\n" + textwrap.dedent(code), block=False)
    assert light.returncode == 0 and full.returncode == 0, light.stderr[-2000:] + full.stderr[-2000:]
    assert json.loads(light.stdout) == json.loads(full.stdout)


def test_searched_directory_registers_without_torch(tmp_path) -> None:
    """`mzoo --searched DIR list` reads a result's spec and report without importing torch."""
    import zoo
    from zoo.searched import write_searched

    spec = zoo.get_arch_spec("hgcnet_0_5x_cifar")
    write_searched(tmp_path / "r", spec, {"name": "lazy_probe_net", "input_size": [3, 32, 32]},
                   zoo.build_model(spec).state_dict())
    result = run_python(f"""
        from mzoo.cli import main
        code = main(["--searched", {str(tmp_path / "r")!r}, "list", "lazy_probe*"])
        print("RESULT", code)
    """)
    assert "RESULT 0" in result.stdout, result.stderr[-2000:]
    assert "lazy_probe_net" in result.stdout


def test_import_zoo_defers_timm_yet_timm_sees_every_zoo_model() -> None:
    result = run_python("""
        import sys
        import zoo
        assert "timm" not in sys.modules and "torch" not in sys.modules
        import timm
        names = sorted(timm.list_models(module="mobile_zoo"))
        assert names == sorted(zoo.list_models()), (len(names), len(zoo.list_models()))
        model = timm.create_model("hgcnet_0_5x_cifar", num_classes=3)
        print("OK", type(model).__name__, model.num_classes)
    """, block=False)
    assert "OK SpecNet 3" in result.stdout, result.stderr[-3000:]


def test_model_registered_after_timm_is_bridged_at_once() -> None:
    result = run_python("""
        import timm, zoo
        from zoo.pretrained import PretrainedCfg
        from zoo.registry import register_model
        @register_model(PretrainedCfg(input_size=(3, 32, 32), num_classes=10))
        def late_probe_net():
            return zoo.get_arch_spec("hgcnet_0_5x_cifar")
        assert "late_probe_net" in timm.list_models(module="mobile_zoo")
        print("OK")
    """, block=False)
    assert "OK" in result.stdout, result.stderr[-3000:]


def test_zoo_name_that_is_timms_is_refused_once_timm_is_imported() -> None:
    """Registered before timm was imported (so not checkable then): create_model refuses it rather than building
    either model, and timm's own model stays timm's."""
    result = run_python("""
        import sys, zoo
        from zoo.pretrained import PretrainedCfg
        from zoo.registry import register_model
        @register_model(PretrainedCfg(input_size=(3, 32, 32), num_classes=10))
        def resnet18():
            return zoo.get_arch_spec("hgcnet_0_5x_cifar")
        assert "timm" not in sys.modules
        try:
            zoo.create_model("resnet18")
        except zoo.DuplicateModelError as err:
            print("REFUSED", err)
        import timm
        print("TIMM", type(timm.create_model("resnet18")).__name__)
    """, block=False)
    assert "REFUSED" in result.stdout and "already a timm model" in result.stdout, result.stderr[-3000:]
    assert "TIMM ResNet" in result.stdout
