"""timm's own model test suite, run on every zoo model: how many of its checks our models pass.

timm's ``tests/test_models.py`` is what a timm user's tooling assumes of a model (plain-dict
``default_cfg``, ``FeatureInfo`` on ``features_only`` models, FX feature extraction, FX → TorchScript,
``reset_classifier`` / ``global_pool=''`` shapes...). The file is not part of this project: pass the path
of a copy from timm's repository (the release ``setup.cfg`` installs). It is run unmodified from a
temporary folder whose ``conftest.py`` imports ``zoo`` (so our models are in timm's registry) and keeps
only the test cases whose ``model_name`` is a zoo model. Prints a table per test function and writes it
to BENCHMARKS.md; exits 1 if any case failed.

    python bench/timm_suite.py --timm-tests PATH/TO/timm/tests/test_models.py [--workers 2] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section  # noqa: E402

CONFTEST = '''\
import os

import torch

import zoo

ZOO_MODELS = set(zoo.list_models())
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if params.get("model_name") in ZOO_MODELS else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
'''


def run_suite(tests: Path, workers: int) -> tuple[dict[str, Counter], list[str], int]:
    """(outcome counts per test function, failure lines, pytest's exit code)."""
    with tempfile.TemporaryDirectory(prefix="mzoo-timm-suite-") as tmp:
        root = Path(tmp)
        shutil.copyfile(tests, root / "test_models.py")
        (root / "conftest.py").write_text(CONFTEST)
        (root / "pytest.ini").write_text("[pytest]\n")
        junit = root / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(root), "-c", str(root / "pytest.ini"), "--rootdir", str(root),
               "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", "-W", "ignore"]
        if workers > 1:
            cmd += ["-n", str(workers)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if not junit.exists():
            sys.exit(f"timm's suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        counts: dict[str, Counter] = defaultdict(Counter)
        failures = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            func = case.get("name", "").split("[")[0]
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            outcome = "failed" if bad is not None else "skipped" if case.find("skipped") is not None else "passed"
            counts[func][outcome] += 1
            if bad is not None:
                failures.append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:200]}")
        return counts, failures, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-tests", type=Path, required=True,
                        help="timm's tests/test_models.py (from a checkout of timm's repository)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if not args.timm_tests.is_file():
        sys.exit(f"--timm-tests: no such file: {args.timm_tests}")
    import timm
    import zoo

    counts, failures, code = run_suite(args.timm_tests, args.workers)
    rows = ["| timm test | zoo models selected | passed | failed | skipped |", "|---|---|---|---|---|"]
    total: Counter = Counter()
    for func in sorted(counts):
        c = counts[func]
        total.update(c)
        rows.append(f"| `{func}` | {sum(c.values())} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    rows.append(f"| **all** | {sum(total.values())} | {total['passed']} | {total['failed']} | {total['skipped']} |")
    import hashlib

    digest = hashlib.sha256(args.timm_tests.read_bytes()).hexdigest()[:12]
    body = (f"timm {timm.__version__} installed; {len(zoo.list_models())} zoo models; timm's `tests/test_models.py` "
            f"(sha256 {digest}…) run unmodified, restricted to the zoo's model names.\n\n" + "\n".join(rows))
    if failures:
        body += "\n\nFailures:\n\n" + "\n".join(f"- {f}" for f in failures[:50])
    print(body)
    if not args.no_write:
        from common.environment import current_environment

        env = current_environment()
        write_section("timm-suite", "timm's own model tests on every zoo model", body,
                      f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}")
    sys.exit(1 if total["failed"] or code not in (0, 5) else 0)


if __name__ == "__main__":
    main()
