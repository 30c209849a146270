"""A skipped test fails the run unless the skip allowlist (tests/skip_allowlist.toml) allows it.

A skip proves nothing, and the test command (scripts/test.sh) installs every tool and extra
the tests use, so a skip there is a defect: a missing tool, a wrong import, a test that no
longer runs. Each `[[skip]]` entry of the allowlist names the skips it allows by `test` (a
node id pattern, `*` matching anything) and/or `reason` (a pattern of the skip's reason), and
says `why` for the reader. At the end of the run the allowed skips are listed with their `why`,
and the run fails on:
- a skip that no entry allows, named with its reason;
- after a run of the whole suite (no paths, -k, -m other than the ini's own addopts, no
  --deselect, --lf or --sw, no early stop), an entry that allowed no skip: it is stale. An entry marked `depends_on_machine` (a GPU test skips where
  there is none and runs where there is one) is stale only when its `test` names no test.

Loaded by tests/conftest.py; the allowlist's path is the `skip_allowlist` ini option. Under
pytest-xdist it judges on the controller, which receives every worker's reports; the workers'
copies stay idle.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_ALLOWLIST = "tests/skip_allowlist.toml"


@dataclass(frozen=True)
class AllowedSkip:
    """One allowlist entry: which skips it allows (test node id and/or reason) and why."""

    why: str
    test: str | None = None
    reason: str | None = None
    depends_on_machine: bool = False

    def label(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in (("test", self.test), ("reason", self.reason))
                        if v is not None)

    def names(self, nodeid: str) -> bool:
        return self.test is None or _glob(self.test).fullmatch(nodeid) is not None

    def allows(self, nodeid: str, reason: str) -> bool:
        return self.names(nodeid) and (
            self.reason is None or _glob(self.reason).fullmatch(reason) is not None)


def _glob(pattern: str) -> re.Pattern:
    """`*` matches anything; everything else (brackets of parametrized ids too) literally."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def load_allowlist(path: Path) -> list[AllowedSkip]:
    """The entries of an allowlist file (none when it does not exist)."""
    if not path.is_file():
        return []
    entries = []
    for number, raw in enumerate(tomllib.loads(path.read_text(encoding="utf-8")).get("skip", []),
                                 start=1):
        where = f"{path}: [[skip]] entry {number}"
        unknown = set(raw) - {"why", "test", "reason", "depends_on_machine"}
        if unknown:
            raise pytest.UsageError(f"{where}: unknown keys {sorted(unknown)}")
        if not str(raw.get("why", "")).strip():
            raise pytest.UsageError(f"{where}: says no `why`")
        if "test" not in raw and "reason" not in raw:
            raise pytest.UsageError(f"{where}: names neither a `test` nor a `reason`")
        if raw.get("depends_on_machine") and "test" not in raw:
            raise pytest.UsageError(f"{where}: depends_on_machine needs a `test`")
        entries.append(AllowedSkip(**raw))
    return entries


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipPolicy:
    def __init__(self, config: pytest.Config, path: Path):
        self.config = config
        self.path = path
        self.entries = load_allowlist(path)
        self.skips: list[tuple[str, str]] = []  # (node id, reason)
        self.nodeids: set[str] = set()  # every test collected, and every collector skipped
        self.allowed: list[tuple[str, str, AllowedSkip]] = []
        self.refused: list[tuple[str, str]] = []
        self.stale: list[AllowedSkip] = []
        self.collect_failed = False  # a file that did not import: not a run of the suite

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.collect_failed = self.collect_failed or report.failed
        if report.skipped:  # a module-level skip or importorskip
            self.nodeids.add(report.nodeid)
            self.skips.append((report.nodeid, skip_reason(report)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.nodeids.add(report.nodeid)  # under xdist the controller collects nothing itself
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((report.nodeid, skip_reason(report)))

    def whole_suite_ran(self, session: pytest.Session) -> bool:
        """Stale entries are judged only after a run of every test: a run narrowed by paths,
        -k, -m, deselection or an early stop would find false ones. The ini's own -m (`not
        bench`: the bench's tests are not the suite's) narrows nothing."""
        config = self.config
        source = config.args_source
        no_paths = (source is pytest.Config.ArgsSource.TESTPATHS
                    or (source is pytest.Config.ArgsSource.INVOCATION_DIR
                        and config.invocation_params.dir == config.rootpath))
        return (no_paths and self.nodeids and not self.collect_failed
                and not config.option.keyword
                and config.option.markexpr in ("", ini_markexpr(config))
                and not config.option.collectonly and not config.option.ignore
                and not config.option.ignore_glob and not config.option.deselect
                and not getattr(config.option, "lf", False)
                and not getattr(config.option, "stepwise", False)
                and not session.shouldstop and not session.shouldfail)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.nodeids.update(item.nodeid for item in session.items)
        used = set()
        for nodeid, reason in self.skips:
            entry = next((e for e in self.entries if e.allows(nodeid, reason)), None)
            if entry is None:
                self.refused.append((nodeid, reason))
            else:
                used.add(entry)
                self.allowed.append((nodeid, reason, entry))
        if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) \
                and self.whole_suite_ran(session):
            self.stale = [e for e in self.entries if e not in used and not (
                e.depends_on_machine and any(map(e.names, self.nodeids)))]
        if (self.refused or self.stale) and exitstatus in (pytest.ExitCode.OK,
                                                            pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after the durations, beside pytest's short summary
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not (self.allowed or self.refused or self.stale):
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "skip policy (tests/skip_policy.py)",
                                   red=bool(self.refused or self.stale))
        for nodeid, reason, entry in self.allowed:
            write(f"allowed skip: {nodeid}: {reason}")
            write(f"    why it may skip: {entry.why}")
        for nodeid, reason in self.refused:
            write(f"SKIP NOT ALLOWED: {nodeid}: {reason}", red=True)
        if self.refused:
            write(f"A skipped test fails the run: make it run (a missing tool or extra is "
                  f"installed by scripts/test.sh), or allow the skip in {self.path} with a "
                  f"`why`.", red=True)
        for entry in self.stale:
            write(f"STALE ALLOWLIST ENTRY: {entry.label()} ({entry.why}) allowed no skip in "
                  f"this run of the whole suite: remove it from {self.path}", red=True)
        if self.refused or self.stale:  # counted in pytest's last line too
            terminalreporter.stats["refused by the skip policy"] = self.refused + self.stale


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("skip_allowlist", "the allowlist of skipped tests (tests/skip_policy.py), "
                  "relative to the rootdir", default=DEFAULT_ALLOWLIST)


def ini_markexpr(config: pytest.Config) -> str:
    """The -m of the ini file's addopts ('not bench' here): the suite's own selection, so a run
    under it is still a run of the whole suite."""
    args = config.getini("addopts")
    for i, arg in enumerate(args):
        if arg == "-m" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:]
    return ""


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller sees every report, and judges the run
    path = config.rootpath / config.getini("skip_allowlist")
    config.pluginmanager.register(SkipPolicy(config, path), "skip_policy_state")
