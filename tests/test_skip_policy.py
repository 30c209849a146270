"""tests/skip_policy.py, run on a small suite of its own (pytester): a skip fails the run unless
the allowlist allows it, an allowed skip is printed with its reason, and an entry that allowed
nothing fails a run of the whole suite (only of the whole suite)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.skip_policy import load_allowlist

pytest_plugins = ["pytester"]

WIDGETS = """
import pytest

def test_runs():
    pass

def test_needs_a_widget():
    pytest.skip("no widget here")

@pytest.mark.skipif(True, reason="no CUDA device")
def test_on_cuda():
    pass
"""
ALLOW_CUDA = """
[[skip]]
reason = "no CUDA device"
why = "the GPU lives on another machine"
"""
ALLOW_WIDGET = """
[[skip]]
test = "tests/test_widgets.py::test_needs_*"
why = "widgets are out of stock"
"""
STALE = """
[[skip]]
test = "tests/test_widgets.py::test_gone"
why = "it used to skip"
"""


def run(pytester: pytest.Pytester, allowlist: str, *args: str,
        files: dict[str, str] | None = None) -> pytest.RunResult:
    """pytest over tests/ of a fresh project whose allowlist is `allowlist`."""
    pytester.makeini("[pytest]\ntestpaths = tests\nskip_allowlist = allow.toml\n")
    (pytester.path / "allow.toml").write_text(allowlist)
    (pytester.path / "tests").mkdir(exist_ok=True)
    for name, text in (files or {"test_widgets.py": WIDGETS}).items():
        (pytester.path / "tests" / name).write_text(text)
    return pytester.runpytest("-p", "tests.skip_policy", *args)


def test_a_skip_no_entry_allows_fails_the_run_naming_it(pytester):
    result = run(pytester, ALLOW_CUDA)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "allowed skip: tests/test_widgets.py::test_on_cuda: no CUDA device",
        "    why it may skip: the GPU lives on another machine",
        "SKIP NOT ALLOWED: tests/test_widgets.py::test_needs_a_widget: no widget here"])


def test_allowed_skips_pass_and_say_why(pytester):
    result = run(pytester, ALLOW_CUDA + ALLOW_WIDGET)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "allowed skip: tests/test_widgets.py::test_needs_a_widget: no widget here",
        "    why it may skip: widgets are out of stock"])
    result.stdout.no_fnmatch_line("*NOT ALLOWED*")


def test_a_module_skipped_at_import_fails_the_run(pytester):
    files = {"test_frames.py": "import pytest\n\npytest.importorskip('no_such_frame_lib')\n\n"
                               "def test_frame():\n    pass\n"}
    result = run(pytester, "", files=files)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["SKIP NOT ALLOWED: tests/test_frames.py: could not import 'no_such_frame_lib'*"])


def test_a_stale_entry_fails_a_run_of_the_whole_suite_only(pytester):
    whole = run(pytester, ALLOW_CUDA + ALLOW_WIDGET + STALE)
    assert whole.ret == pytest.ExitCode.TESTS_FAILED
    whole.stdout.fnmatch_lines(["STALE ALLOWLIST ENTRY: test='tests/test_widgets.py::test_gone' "
                                "(it used to skip) allowed no skip*"])
    # a developer's narrowed run cannot tell a stale entry from one its selection left out
    for narrowed in (["tests/test_widgets.py"], ["-k", "not runs"], ["-m", "not slow"]):
        result = run(pytester, ALLOW_CUDA + ALLOW_WIDGET + STALE, *narrowed)
        assert result.ret == pytest.ExitCode.OK, narrowed
        result.stdout.no_fnmatch_line("*STALE*")


def test_an_entry_that_depends_on_the_machine_is_stale_only_when_its_test_is_gone(pytester):
    runs_here = WIDGETS.replace("skipif(True", "skipif(False")
    entry = ALLOW_WIDGET + ('[[skip]]\ntest = "tests/test_widgets.py::test_on_cuda"\n'
                            'why = "needs a GPU"\ndepends_on_machine = true\n')
    result = run(pytester, entry, files={"test_widgets.py": runs_here})
    assert result.ret == pytest.ExitCode.OK  # a machine with a GPU ran it
    renamed = runs_here.replace("def test_on_cuda", "def test_on_gpu")
    result = run(pytester, entry, files={"test_widgets.py": renamed})
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["STALE ALLOWLIST ENTRY: test='tests/test_widgets.py::test_on_cuda'*"])


def test_an_entry_without_a_why_is_a_usage_error(pytester):
    result = run(pytester, '[[skip]]\ntest = "tests/test_widgets.py::*"\n')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allow.toml: * entry 1: says no `why`"])


def test_this_suite_runs_under_the_policy_and_its_allowlist_names_real_tests(request):
    assert request.config.pluginmanager.has_plugin("tests.skip_policy")
    entries = load_allowlist(REPO / "tests" / "skip_allowlist.toml")
    assert entries
    for entry in entries:
        assert entry.test is None or (REPO / entry.test.split("::")[0]).is_file(), entry


def test_the_ini_own_marker_selection_is_still_the_whole_suite(pytester):
    """The suite's ini deselects the bench with `-m 'not bench'` in addopts: a run under it is
    a run of the whole suite, so a stale entry fails it (a -m given beside it narrows)."""
    pytester.makeini("[pytest]\ntestpaths = tests\nskip_allowlist = allow.toml\n"
                     "addopts = -m 'not bench'\nmarkers =\n    bench: the bench's\n")
    (pytester.path / "allow.toml").write_text(ALLOW_CUDA + ALLOW_WIDGET + STALE)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_widgets.py").write_text(
        WIDGETS + "\n@pytest.mark.bench\ndef test_timed():\n    pass\n")
    whole = pytester.runpytest("-p", "tests.skip_policy")
    whole.assert_outcomes(passed=1, skipped=2, deselected=1)
    assert whole.ret == pytest.ExitCode.TESTS_FAILED
    whole.stdout.fnmatch_lines(["STALE ALLOWLIST ENTRY: test='tests/test_widgets.py::test_gone'*"])
    narrowed = pytester.runpytest("-p", "tests.skip_policy", "-m", "not slow")
    assert narrowed.ret == pytest.ExitCode.OK
    narrowed.stdout.no_fnmatch_line("*STALE*")


def test_under_xdist_the_controller_judges_every_workers_skips(pytester):
    """The test command runs two workers (scripts/test.sh): refused, allowed and stale skips
    are judged on the controller from the workers' reports, as in a serial run."""
    clean = run(pytester, ALLOW_CUDA + ALLOW_WIDGET, "-n", "2", "-p", "xdist")
    clean.assert_outcomes(passed=1, skipped=2)
    assert clean.ret == pytest.ExitCode.OK
    stale = run(pytester, ALLOW_CUDA + ALLOW_WIDGET + STALE, "-n", "2", "-p", "xdist")
    assert stale.ret == pytest.ExitCode.TESTS_FAILED
    stale.stdout.fnmatch_lines(["STALE ALLOWLIST ENTRY: test='tests/test_widgets.py::test_gone'*"])
    files = {"test_widgets.py": WIDGETS,
             "test_frames.py": "import pytest\n\npytest.importorskip('no_such_frame_lib')\n"}
    refused = run(pytester, ALLOW_CUDA, "-n", "2", "-p", "xdist", files=files)
    assert refused.ret == pytest.ExitCode.TESTS_FAILED
    for line in ("allowed skip: tests/test_widgets.py::test_on_cuda: no CUDA device",
                 "SKIP NOT ALLOWED: tests/test_widgets.py::test_needs_a_widget: no widget here",
                 "SKIP NOT ALLOWED: tests/test_frames.py: could not import 'no_such_frame_lib'*"):
        refused.stdout.fnmatch_lines([line])  # in the order the workers' reports came


def test_a_run_that_did_not_collect_judges_no_entry_stale(pytester):
    """xdist workers that collected different tests (ids drawn at random) run nothing: no run
    of the whole suite, so no entry is judged stale for want of its skip."""
    drawn = ("import random\nimport pytest\n\n"
             "@pytest.mark.parametrize('x', [random.random()])\ndef test_drawn(x):\n    pass\n")
    files = {"test_widgets.py": WIDGETS, "test_drawn.py": drawn}
    result = run(pytester, ALLOW_CUDA + ALLOW_WIDGET + STALE, "-n", "2", "-p", "xdist",
                 files=files)
    result.stdout.fnmatch_lines(["*Different tests were collected between gw*"])
    assert result.ret != pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*STALE*")
