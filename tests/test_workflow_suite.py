"""The edit-test loop stays fast: `make test` runs only the quick suite; everything that runs
the workflow end to end (minutes each) is marked slow and runs in `make test-slow`, which CI
also runs."""

import ast
import re

from conftest import ROOT

QUICK = '-m "not slow and not slurm"'
RUNS = ("'--cores'", "make_run(")  # how a test starts real jobs


def test_make_test_is_the_quick_suite_and_ci_runs_both():
    make = (ROOT / "Makefile").read_text()
    test = re.search(r"^test: .*\n\t(.*)$", make, re.M).group(1)
    slow = re.search(r"^test-slow: .*\n\t(.*)$", make, re.M).group(1)
    assert test.startswith("$(TEST)") and slow.startswith("$(TEST)")
    assert QUICK in test and '-m "slow or slurm"' in slow
    ci = (ROOT / ".ci/run").read_text()
    assert "make test\n" in ci and "make test-slow" in ci


def _runs_and_marks(path):
    """{test name: (runs workflow jobs, marked slow)} for one test module, read statically (no
    collection: importing every module costs more than this whole check)."""
    tree = ast.parse(path.read_text())
    module_slow = "mark.slow" in "".join(ast.unparse(n) for n in tree.body
                                         if isinstance(n, ast.Assign)
                                         and "pytestmark" in ast.unparse(n.targets[0]))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    runs = {name: any(s in ast.unparse(f) for s in RUNS) for name, f in funcs.items()}
    for _ in funcs:  # through fixtures that run the workflow
        for name, f in funcs.items():
            runs[name] |= any(runs.get(a.arg, False) for a in f.args.args)
    return {name: (runs[name], module_slow or any("mark.slow" in ast.unparse(d)
                                                  for d in f.decorator_list))
            for name, f in funcs.items() if name.startswith("test_")}


def test_end_to_end_tests_are_marked_slow():
    """Every test that runs real workflow jobs (snakemake with --cores, `make run`), itself or
    through a fixture, is marked slow, so the quick suite never does."""
    found = 0
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for name, (runs, slow) in _runs_and_marks(path).items():
            found += runs
            assert slow or not runs, f"{path.name}::{name} runs the workflow: mark it slow"
    assert found >= 8
