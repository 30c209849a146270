"""tests/xdist_plan.py, the test command's sharing of the suite between two xdist workers, on
small suites of its own (pytester): a file is one unit, the files that start Ray are one unit,
the longest units start first, and every path the plan names exists."""

from __future__ import annotations

import pytest

from tests import xdist_plan
from tests.conftest import REPO

pytest_plugins = ["pytester"]

# each test appends "<worker> <file>" to the log, as it starts
RECORD = """
import os

def record(name):
    with open({log!r}, "a") as log:
        log.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {{name}}\\n")
"""


def suite(pytester: pytest.Pytester, files: list[str]) -> list[tuple[str, str]]:
    """Run the files (two tests each, sharing a module fixture) on two workers by the plan;
    the (worker, file) of each test as it started (and '<file> end' as a file's last test
    ended), in that order."""
    log = pytester.path / "started.log"
    for name in files:
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "import time\nimport pytest\n" + RECORD.format(log=str(log)) + "\n\n"
            "@pytest.fixture(scope='module')\ndef once():\n"
            f"    record('{name} fixture')\n    return 1\n\n"
            f"def test_one(once):\n    record('{name}')\n    time.sleep(0.3)\n\n"
            f"def test_two(once):\n    record('{name}')\n    time.sleep(0.3)\n"
            f"    record('{name} end')\n")
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    result = pytester.runpytest("-p", "tests.xdist_plan", "-n", "2", "--dist", "loadfile",
                                "--rootdir", str(pytester.path))
    result.assert_outcomes(passed=2 * len(files))
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]


def test_a_file_runs_on_one_worker_with_its_module_fixture_set_up_once(pytester):
    started = suite(pytester, [f"tests/test_{c}.py" for c in "abcd"])
    for c in "abcd":
        name = f"tests/test_{c}.py"
        assert {w for w, what in started if what.startswith(name)} != set()
        assert len({w for w, what in started if what.startswith(name)}) == 1, started
        assert [what for _, what in started].count(f"{name} fixture") == 1, started


def test_the_files_that_start_ray_share_one_worker(pytester):
    ray = sorted(xdist_plan.RAY_FILES)
    started = suite(pytester, [*ray, "tests/test_a.py", "tests/test_b.py"])
    workers = {w for w, what in started if what.split(" ")[0] in xdist_plan.RAY_FILES}
    assert len(workers) == 1, started


def test_the_longest_units_start_first(pytester, monkeypatch):
    # the controller runs in this process (pytester), so the plan it reads can be patched
    monkeypatch.setattr(xdist_plan, "LONGEST", {"tests/test_y.py": 10, "tests/test_z.py": 20})
    started = suite(pytester, [f"tests/test_{c}.py" for c in "abcdyz"])
    first = [what for _, what in started if not what.endswith(("fixture", " end"))]
    assert set(first[:2]) == {"tests/test_z.py", "tests/test_y.py"}, started


def test_a_solo_unit_runs_last_and_alone(pytester, monkeypatch):
    monkeypatch.setattr(xdist_plan, "SOLO", frozenset({"tests/test_a.py"}))
    started = suite(pytester, [f"tests/test_{c}.py" for c in "abcde"])
    order = [what for _, what in started if not what.endswith("fixture")]
    # test_a is first in collection order, yet it starts only after every other test ended:
    # also the last test the other worker held when it was told to stop
    assert order[-3:] == ["tests/test_a.py", "tests/test_a.py", "tests/test_a.py end"], started
    assert sum(what.endswith(" end") for what in order[:-3]) == 4, started


def test_a_run_of_solo_units_alone_finishes(pytester, monkeypatch):
    monkeypatch.setattr(xdist_plan, "SOLO", frozenset({"tests/test_a.py", "tests/test_b.py"}))
    started = suite(pytester, ["tests/test_a.py", "tests/test_b.py"])
    assert len(started) == 8, started  # two fixtures, four tests, two ends: no worker waited


def test_units_and_order_without_xdist():
    assert xdist_plan.unit_of("tests/engine/test_deploy_ray.py::test_x[a::b]") == "ray"
    assert xdist_plan.unit_of("tests/test_plan.py::test_x") == "tests/test_plan.py"
    waiting = ["tests/test_a.py", "tests/engine/test_chaos.py", "tests/test_b.py"]
    assert xdist_plan.longest_first(waiting) == "tests/engine/test_chaos.py"
    assert xdist_plan.longest_first(["tests/test_a.py", "tests/test_b.py"]) == "tests/test_a.py"


def test_every_path_the_plan_names_is_a_test_file():
    named = (set(xdist_plan.RAY_FILES) | set(xdist_plan.SOLO)
             | set(xdist_plan.LONGEST) - {xdist_plan.RAY_UNIT})
    assert named and all((REPO / path).is_file() for path in named), named
