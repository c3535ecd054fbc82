"""Imports point down: the contracts in pyproject.toml ([tool.importlinter]: layers, no cycles)
hold for the package, and import-linter breaks them on an upward import, a cycle or an unplaced
module planted in a copy of the package. About a second: import-linter reads the imports
statically (those inside functions too), without importing fedsafe."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under root/src with root/pyproject.toml's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"),  # this copy, not the installed one
           "COLUMNS": "200"}  # no line wrapping in the report
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache",
                           "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


PLANTED = {
    # the data layer reaching up to the jobs, inside a function as such imports usually are
    "upward": ("data/partition.py", "\n\ndef _planted():\n    from fedsafe.jobs import train\n",
               "fedsafe.data.partition -> fedsafe.jobs"),
    # membership imports context; context importing membership closes a circle in one layer
    "cycle": ("attacks/context.py",
              "\n\ndef _planted():\n    from fedsafe.attacks.membership.loss import loss_scores\n",
              "No cycles are allowed in fedsafe.attacks"),
    # a new module must be placed in a layer, or it could import anything unchecked
    "unplaced": ("planted.py", "import fedsafe.jobs\n", "- fedsafe.planted"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_import_breaks_a_contract(tmp_path, case):
    shutil.copytree(ROOT / "src" / "fedsafe", tmp_path / "src" / "fedsafe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    module, code, message = PLANTED[case]
    path = tmp_path / "src" / "fedsafe" / module
    path.write_text((path.read_text() if path.exists() else "") + code)
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout
