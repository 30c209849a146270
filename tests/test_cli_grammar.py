"""One CLI grammar: every verb that reads a spec defaults to the project in the current folder
and takes -C DIR; one output switch (--format, with --json kept as a hidden deprecated
spelling); JSON on stdout whatever happens, errors included; did-you-mean for verbs; shell
completion; and a missing optional extra is a usage error naming the extra, never a bug."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.cli.commands import VERBS
from mlstack.cli.main import build_parser, main
from mlstack.diagnostics.errors import EXTRA_MODULES
from tests.conftest import BLUEPRINTS, REPO
from tests.test_lint_corpus import CORPUS

SPEC_VERBS = ("compile", "plan", "graph", "docs", "deploy", "status", "down", "rollback",
              "logs")
FORMATTED = tuple(v for v in VERBS if v != "completion")
WARNING_SPEC = CORPUS / "slo_ttl_shorter_than_freshness.yaml"
BAD_SPEC = CORPUS / "ref_unknown_entity.yaml"


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.fixture
def project(tmp_path) -> Path:
    """An init'd churn project (local target), outside any git repository's folders."""
    path = tmp_path / "proj"
    assert main(["init", str(path), "--format", "json"]) == 0
    return path


# --- the grammar ---------------------------------------------------------------------------

@pytest.mark.parametrize("verb", SPEC_VERBS)
def test_every_spec_verb_takes_an_optional_spec_and_minus_c(verb):
    parser = _verb_parsers()[verb]
    spec = next(a for a in parser._actions if a.dest == "spec")
    assert spec.nargs == "?" and spec.default is None
    assert any(a.option_strings == ["-C", "--project"] for a in parser._actions)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_takes_minus_c(verb):
    assert any(a.option_strings == ["-C", "--project"] for a in _verb_parsers()[verb]._actions)


@pytest.mark.parametrize("verb", FORMATTED)
def test_every_verb_has_one_format_switch_and_the_hidden_json_alias(verb):
    actions = {o: a for a in _verb_parsers()[verb]._actions for o in a.option_strings}
    fmt = actions["--format"]
    assert "json" in fmt.choices and fmt.default == "text" and "text" in fmt.choices
    assert actions["--json"].dest == "format" and actions["--json"].help == argparse.SUPPRESS


@pytest.mark.parametrize("verb", SPEC_VERBS)
def test_without_a_project_here_every_spec_verb_says_so(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([verb]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no mlstack.yaml in the current folder" in err and "-C DIR" in err
    assert main([verb, "--format", "json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["code"] == "usage_error" and doc["error"]["exit_code"] == 2
    assert "no mlstack.yaml" in doc["error"]["message"] and doc["error"]["hint"]


def test_spec_verbs_default_to_the_project_in_the_current_folder(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["lint"]) == 0
    assert main(["plan"]) == 0
    assert "Plan:" in capsys.readouterr().out
    assert main(["graph"]) == 0
    assert capsys.readouterr().out.startswith("flowchart")
    assert main(["compile", "--dry-run"]) == 0
    assert "Dry run: nothing written to build" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["before", "after"])
def test_minus_c_runs_in_another_folder(where, project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["-C", "proj", "plan"] if where == "before" else ["plan", "--project", "proj"]
    assert main(argv) == 0
    assert "Plan:" in capsys.readouterr().out
    assert Path.cwd() == tmp_path  # restored
    assert main(["-C", str(tmp_path), "lint", "-C", "proj", "mlstack.yaml"]) == 0
    assert capsys.readouterr().out == "1 file clean\n"


def test_minus_c_to_a_missing_folder_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "-C", "nowhere"]) == 2
    assert "-C nowhere: no such folder" in capsys.readouterr().err


def test_a_mistyped_verb_gets_a_did_you_mean(capsys):
    assert main(["complie"]) == 2
    err = capsys.readouterr().err
    assert "'complie' is not an mlstack verb" in err and "did you mean 'compile'?" in err
    assert main(["plna", "--format", "json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["hint"] == "did you mean 'plan'?"


@pytest.mark.parametrize("argv, message", [
    (["deploy", "--port", "0"], "argument --port: '0' is not a port number (1 to 65535)"),
    (["deploy", "--port", "70000"], "'70000' is not a port number"),
    (["deploy", "--duration", "-1"], "argument --duration: '-1' is not a number above 0"),
    (["deploy", "--rate", "0"], "argument --rate: '0' is not a number above 0"),
    (["deploy", "--rate", "nan"], "'nan' is not a number above 0"),
    (["deploy", "--concurrency", "0"], "'0' is not a whole number of at least 1"),
    (["deploy", "--max-step-seconds", "inf"], "'inf' is not a number above 0"),
    (["deploy", "--max-verify-seconds", "soon"], "'soon' is not a number above 0"),
    (["logs", "-n", "-3"], "argument -n/--lines: '-3' is not a whole number of at least 1"),
    (["docs", "--serve", "--port", "-1"], "'-1' is not a port number (0 picks a free one"),
])
def test_numbers_out_of_range_are_usage_errors_before_any_work(argv, message, project,
                                                                monkeypatch, capsys):
    """A deploy with --port 0 once ran every stage and failed at the router after ~70 s."""
    monkeypatch.chdir(project)
    before = sorted(project.rglob("*"))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(project.rglob("*")) == before  # nothing written


# --- JSON is always JSON -------------------------------------------------------------------

def test_plan_json_on_a_bad_spec_is_a_json_error(capsys):
    assert main(["plan", str(BAD_SPEC), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    error = doc["error"]
    assert error["code"] == "spec_error" and error["exit_code"] == 1
    assert error["location"]["file"].endswith("ref_unknown_entity.yaml")
    assert error["location"]["line"] >= 1 and "MLS201" in error["message"]
    assert {d["code"] for d in doc["diagnostics"]} >= {"MLS201"}
    assert main(["plan", str(BAD_SPEC), "--json", "--detailed-exitcode"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["exit_code"] == 1


@pytest.mark.parametrize("argv", [["plan", "--format", "json", "--bogus"],
                                  ["status", "--format", "json", "no/such/mlstack.yaml"],
                                  ["graph", "--format=json", "no/such/mlstack.yaml"],
                                  ["compile", "--json", "no/such/mlstack.yaml"],
                                  ["init", "--format", "json", "--blueprint", "chrn"]])
def test_errors_in_json_mode_are_json_on_stdout(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert set(doc["error"]) == {"code", "message", "hint", "location", "exit_code"}
    assert doc["error"]["exit_code"] == 2 and doc["diagnostics"] == []
    assert f"error: {doc['error']['message']}" in err  # and for the person reading the log


def test_the_deprecated_json_flag_still_works_and_warns(project, capsys):
    assert main(["plan", str(project), "--format", "json"]) == 0
    new = capsys.readouterr()
    assert main(["plan", str(project), "--json"]) == 0
    old = capsys.readouterr()
    assert json.loads(old.out) == json.loads(new.out)
    assert "--json is deprecated: use --format json" in old.err and new.err == ""


def test_json_of_the_other_verbs(project, capsys):
    assert main(["graph", str(project), "--format", "json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert graph["nodes"] and graph["edges"]
    assert main(["compile", str(project), "--format", "json", "--dry-run"]) == 0
    compiled = json.loads(capsys.readouterr().out)
    assert compiled["dry_run"] and compiled["counts"]["create"] > 0 and compiled["warnings"] == []
    assert main(["init", "--list", "--format", "json"]) == 0
    assert "churn" in {b["name"] for b in json.loads(capsys.readouterr().out)["blueprints"]}


# --- lint's warnings on compile, plan, deploy ---------------------------------------------

def test_compile_and_plan_show_lint_warnings(tmp_path, capsys):
    spec = tmp_path / "mlstack.yaml"
    shutil.copyfile(WARNING_SPEC, spec)
    assert main(["plan", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert "warning: MLS403" in err and "MLS403" not in out and "Plan:" in out
    assert main(["plan", str(spec), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [w["code"] for w in doc["warnings"]] == ["MLS403"]
    assert main(["compile", str(spec)]) == 0
    assert "warning: MLS403" in capsys.readouterr().err
    assert main(["compile", str(spec), "--format", "json"]) == 0
    assert [w["code"] for w in json.loads(capsys.readouterr().out)["warnings"]] == ["MLS403"]


def test_deploy_results_carry_the_warnings():
    from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity
    from mlstack.ops.report import DeployResult

    warning = Diagnostic("MLS403", Severity.WARNING, "m", Location("mlstack.yaml", 2, 3))
    result = DeployResult("s", "v1", "http://x", None, True, warnings=[warning])
    assert result.as_dict()["warnings"] == [warning.as_dict()]


# --- shell completion ----------------------------------------------------------------------

def _bash_complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    probe = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _mlstack; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    assert "complete -o default -F _mlstack mlstack" in script
    assert _bash_complete(script, ["mlstack", "pl"]) == ["plan"]
    assert set(VERBS) <= set(_bash_complete(script, ["mlstack", "''"]))
    assert _bash_complete(script, ["mlstack", "lint", "--format", "''"]) == [
        "text", "json", "sarif", "github"]
    assert "--strict" in _bash_complete(script, ["mlstack", "-C", "x", "lint", "--"])
    assert "--json" not in _bash_complete(script, ["mlstack", "plan", "--"])
    assert _bash_complete(script, ["mlstack", "completion", "''"]) == ["bash", "zsh"]


def test_zsh_completion(capsys):
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef mlstack") and "compdef _mlstack mlstack" in script
    for verb in VERBS:
        assert f"        '{verb}:" in script and f"            {verb})" in script
    assert "--format[output format" in script and "(text json sarif github)" in script
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n", "-c", script]).returncode == 0


# --- optional extras -----------------------------------------------------------------------

@pytest.mark.parametrize(("module", "code"), [("httpx", 2), ("bentoml.io", 2), ("yaml2", 70)])
def test_a_missing_extra_is_a_usage_error_naming_it(module, code, monkeypatch, capsys):
    import mlstack.cli.commands.status as status_verb

    def run(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(status_verb, "run", run)
    monkeypatch.delenv("MLSTACK_DEBUG", raising=False)
    assert main(["status", "x.yaml"]) == code
    err = capsys.readouterr().err
    if code == 2:
        assert "needs the 'runtime' extra" in err and "pip install 'mlstack[runtime]'" in err
        assert "bug" not in err
    else:
        assert "internal error" in err and "bug" in err


# In a child process, the runtime extra's libraries made unimportable (as in a core install:
# `import httpx` raises ModuleNotFoundError, find_spec says None). The aws deploy synthesizes
# with a stub (the real synth installs cdktn from the index) writing a one-resource stack, then
# runs the real terraform init and plan.
CORE = """
import json, sys
from pathlib import Path
BLOCKED = {blocked!r}
for name in BLOCKED:
    sys.modules[name] = None
import mlstack.ops.cluster.infra_env as infra_env

def synth(out_dir, progress=None):
    stack = Path(out_dir) / "infra" / "cdktf.out" / "stacks" / "probe" / "cdk.tf.json"
    stack.parent.mkdir(parents=True, exist_ok=True)
    stack.write_text(json.dumps({{"terraform": {{"backend": {{"local": {{}}}}}},
                                 "resource": {{"terraform_data": {{"probe": {{"input": "x"}}}}}}}}))
    return infra_env.SynthResult(stack="probe", path=stack, env=None, seconds=0.0)

infra_env.synth = synth
from mlstack.cli.main import main
code = main(sys.argv[1:])
sys.stderr.write("IMPORTED=" + json.dumps(sorted(
    n for n in sys.modules if n.split(".")[0] in BLOCKED and sys.modules[n] is not None)))
raise SystemExit(code)
"""


def _core(argv: list[str], cwd: Path, extra: str = "runtime") -> subprocess.CompletedProcess:
    blocked = sorted(EXTRA_MODULES[extra])
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "MLSTACK_HOME": str(cwd / ".home")}
    env.pop("MLSTACK_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", CORE.format(blocked=blocked), *argv], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr and "a bug" not in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().endswith("IMPORTED=[]"), proc.stderr
    return proc


def test_core_install_status_and_local_deploy_name_the_extra(project):
    status = _core(["status"], project)
    assert status.returncode == 2 and "has not been deployed" in status.stderr
    deploy = _core(["deploy", "--format", "json"], project)
    assert deploy.returncode == 2, deploy.stderr
    error = json.loads(deploy.stdout)["error"]
    assert error["code"] == "missing_extra" and error["hint"] == "pip install 'mlstack[runtime]'"
    assert "'runtime' extra" in error["message"]


@pytest.mark.parametrize(("blueprint", "extra"), [("search-ranking", "lightgbm"),
                                                   ("fraud-gpu", "xgboost")])
def test_a_missing_framework_compiles_and_deploy_names_its_extra(blueprint, extra, tmp_path):
    """Lint and compile need no framework; a local deploy refuses before training, naming the
    extra (fraud-gpu's aws target is made local here)."""
    shutil.copytree(BLUEPRINTS / blueprint, tmp_path / "p", ignore=shutil.ignore_patterns(
        "build", ".mlstack"))
    spec = tmp_path / "p" / "mlstack.yaml"
    text = spec.read_text()
    if "kind: aws" in text:
        text = text[:text.index("target:")] + "target: {kind: local, training: {gpu: preferred}}\n"
        spec.write_text(text)
    assert _core(["lint", "-C", "p"], tmp_path, extra).returncode == 0
    assert _core(["compile", "-C", "p"], tmp_path, extra).returncode == 0
    deploy = _core(["deploy", "-C", "p", "--format", "json"], tmp_path, extra)
    assert deploy.returncode == 2, deploy.stderr
    error = json.loads(deploy.stdout)["error"]
    assert error["code"] == "missing_extra" and error["hint"] == f"pip install 'mlstack[{extra}]'"
    assert f"a {extra} model needs the '{extra}' extra" in error["message"]
    assert not (tmp_path / "p" / ".mlstack" / "deployments.json").exists()


@pytest.mark.skipif(shutil.which("terraform") is None and shutil.which("tofu") is None,
                    reason="neither terraform nor tofu is installed")
def test_core_install_deploys_a_cluster_target_dry_run(tmp_path):
    shutil.copytree(BLUEPRINTS / "fraud-gpu", tmp_path / "fraud", ignore=shutil.ignore_patterns(
        "build", ".mlstack"))
    done = _core(["deploy", "-C", "fraud", "--dry-run", "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["target"] == "aws" and result["dry_run"] and not result["applied"]
    assert result["plan"]["create"] == ["terraform_data.probe"]
    assert [s["name"] for s in result["stages"]][:2] == ["compile", "synth"]
    assert not (tmp_path / "fraud" / ".mlstack" / "terraform" / "probe.tfstate").exists()


def test_help_names_the_global_minus_c(capsys):
    assert main(["--help"]) == 0
    assert "-C DIR, --project DIR" in capsys.readouterr().out


def test_the_train_worker_names_the_extra_of_a_missing_framework(tmp_path):
    """A generated flow that cannot import its framework fails in the worker with the extra
    to install, which deploy's train stage shows, not a bare ModuleNotFoundError."""
    result = tmp_path / "result.json"
    flows = tmp_path / "pipelines"
    flows.mkdir()
    (flows / "__init__.py").write_text("")
    (flows / "flows.py").write_text("from xgboost import XGBClassifier\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    code = "\n".join([
        "import sys; sys.modules['xgboost'] = None  # as if not installed",
        "from mlstack.ops.local.worker import main",
        f"raise SystemExit(main(['train', '--package', 'p', '--result', {str(result)!r}]))"])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    error = json.loads(result.read_text())["error"]
    assert error == ("the generated code needs the 'xgboost' extra of mlstack (xgboost is not "
                     "installed); pip install 'mlstack[xgboost]'")
