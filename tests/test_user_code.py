"""User code (model.estimator, python transforms): checked by parsing, located, compiled.

The checks (mlstack.frontend.usercode) on every failure mode and hostile path, each reported at
the spec's field with its code; the compile (the user's files copied byte for byte into the
generated package, deterministic, the rest of the tree lint-clean); plan (a change of a user
file, with the spec untouched, is a user_code change that retrains).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.formatter import _ruff
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.runtime.model_input import InputSchema
from mlstack.workspace.plan import Consequence, deploy_actions, diff_systems
from tests.test_spec_options import LOCAL

FEATURES = "import numpy as np\n\n\ndef ratio(a, b):\n    return a / np.maximum(b, 1)\n"
MODELS = ("from sklearn.linear_model import LogisticRegression\n\n\n"
          "def build_model(c=1.0, max_iter=100, random_state=None):\n"
          "    return LogisticRegression(C=c, max_iter=max_iter, random_state=random_state)\n")
TRANSFORM = {"name": "calls_ratio", "python": "features.py:ratio",
             "inputs": ["customer_profile.support_calls", "customer_profile.tenure_months"]}


def user_doc(transform: dict | None = None, estimator: str | None = "models.py:build_model",
             params: dict | None = None) -> dict:
    doc = copy.deepcopy(LOCAL)
    doc["features"]["transforms"].append(transform or copy.deepcopy(TRANSFORM))
    doc["model"]["features"].append((transform or TRANSFORM)["name"])
    if estimator is not None:
        del doc["model"]["algorithm"]
        doc["model"]["estimator"] = estimator
        doc["model"]["params"] = {"c": 0.5} if params is None else params
    return doc


def analyze(folder: Path, doc: dict, files: dict[str, str | bytes] | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ({"features.py": FEATURES, "models.py": MODELS} if files is None
                       else files).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return analyze_spec(spec)


def first_error(analysis):
    assert analysis.errors, "no error"
    d = analysis.errors[0]
    return d.code, d.pointer, d.message, d.hint


# -- a project that uses both ---------------------------------------------------------------
def test_a_valid_project_resolves_with_its_files_in_the_ir(tmp_path):
    analysis = analyze(tmp_path, user_doc())
    assert analysis.errors == [], analysis.errors
    system = analysis.system
    assert [(f.path, f.module, f.text) for f in system.user_files] == [
        ("features.py", "features", FEATURES), ("models.py", "models", MODELS)]
    factory = system.model.estimator.factory
    assert (factory.ref, factory.function, factory.line) == ("models.py:build_model",
                                                             "build_model", 4)
    # random_state named by the factory: it gets the training seed
    assert dict(system.model.estimator.params) == {"c": 0.5, "random_state": 7}
    assert system.model.algorithm == "custom"
    transform = next(t for t in system.transforms if t.function)
    assert [i.column for i in transform.inputs] == ["customer_profile__support_calls",
                                                    "customer_profile__tenure_months"]
    # round trip: spec -> IR -> JSON -> IR
    assert SystemIR.model_validate_json(system.model_dump_json()) == system


def test_the_spec_hash_of_a_spec_without_user_code_is_unchanged_by_the_new_keys(tmp_path):
    from tests.conftest import BLUEPRINTS

    lock = json.loads((Path(__file__).parent.parent / "generated" / "churn" /
                       "mlstack.lock.json").read_text())
    assert analyze_spec(BLUEPRINTS / "churn" / "mlstack.yaml").system.spec_hash == (
        lock["spec_hash"])


# -- hostile and broken paths ---------------------------------------------------------------
@pytest.mark.parametrize(("ref", "code"), [
    ("/etc/passwd.py:f", "MLS602"),
    ("../outside.py:f", "MLS602"),
    ("sub/../../outside.py:f", "MLS602"),
    ("~/models.py:f", "MLS602"),
    ("C:/models.py:f", "MLS602"),
    ("https://example.com/models.py:f", "MLS602"),
    ("sub\\\\models.py:f", "MLS602"),
    ("models.txt:build_model", "MLS604"),
    ("my-models.py:build_model", "MLS604"),
    ("class.py:build_model", "MLS604"),
    ("__init__.py:build_model", "MLS604"),
    ("./:build_model", "MLS604"),
    ("nothere.py:build_model", "MLS603"),
    ('x"; import os #.py:build_model', "MLS604"),
    ("{{ 7 * 7 }}.py:build_model", "MLS604"),
    ("mod\u00e9ls.py:build_model", "MLS604"),
    ("models.py\x00.txt:build_model", "MLS602"),
    ("models.py:__import__('os')", "MLS601"),
    ("models.py", "MLS601"),
    ("models.py:", "MLS601"),
    ("models.py:build-model", "MLS601"),
])
def test_hostile_and_malformed_references_are_refused_at_the_field(tmp_path, ref, code):
    analysis = analyze(tmp_path, user_doc(estimator=ref))
    got, pointer, message, hint = first_error(analysis)
    assert (got, pointer) == (code, "/model/estimator"), message
    assert hint


def test_a_symlink_out_of_the_project_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "models.py").write_text(MODELS)
    project = tmp_path / "project"
    project.mkdir()
    (project / "models.py").symlink_to(outside / "models.py")
    analysis = analyze(project, user_doc(), files={"features.py": FEATURES})
    code, pointer, message, _ = first_error(analysis)
    assert (code, pointer) == ("MLS602", "/model/estimator") and "symlink" in message


def test_a_symlinked_folder_out_of_the_project_is_refused(tmp_path):
    outside = tmp_path / "outside"
    (outside / "lib").mkdir(parents=True)
    (outside / "lib" / "models.py").write_text(MODELS)
    project = tmp_path / "project"
    project.mkdir()
    (project / "lib").symlink_to(outside / "lib", target_is_directory=True)
    analysis = analyze(project, user_doc(estimator="lib/models.py:build_model"),
                       files={"features.py": FEATURES})
    assert first_error(analysis)[:2] == ("MLS602", "/model/estimator")


def test_a_symlink_inside_the_project_is_followed(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "models.py").write_text(MODELS)
    (tmp_path / "models.py").symlink_to(tmp_path / "src" / "models.py")
    analysis = analyze(tmp_path, user_doc(), files={"features.py": FEATURES})
    assert analysis.errors == []


def test_a_symlink_loop_and_a_folder_are_not_files(tmp_path):
    (tmp_path / "models.py").symlink_to(tmp_path / "models.py")
    assert first_error(analyze(tmp_path, user_doc(), files={"features.py": FEATURES}))[
        :2] == ("MLS603", "/model/estimator")
    other = tmp_path / "other"
    (other / "models.py").mkdir(parents=True)
    code, _, message, _ = first_error(analyze(other, user_doc(), files={
        "features.py": FEATURES}))
    assert code == "MLS603" and "not a regular file" in message


def test_a_missing_file_suggests_a_close_name(tmp_path):
    analysis = analyze(tmp_path, user_doc(estimator="model.py:build_model"))
    assert first_error(analysis)[3] == "did you mean 'models.py'?"


def test_a_file_in_a_subfolder_becomes_a_nested_module(tmp_path):
    analysis = analyze(tmp_path, user_doc(estimator="src/ml/models.py:build_model"),
                       files={"features.py": FEATURES, "src/ml/models.py": MODELS})
    assert analysis.errors == []
    assert [f.module for f in analysis.system.user_files] == ["features", "src.ml.models"]


# -- files that are not Python --------------------------------------------------------------
@pytest.mark.parametrize(("content", "words"), [
    ("def build_model(:\n    pass\n", "models.py:4:"),
    (b"def build_model():\n    return '\xff'\n", "not UTF-8"),
    ("def build_model():\n    return 1\x00\n", "null bytes"),
    ("x = 1\n" * 200_000, "larger than"),
])
def test_a_file_that_does_not_parse_is_refused_with_its_line(tmp_path, content, words):
    if words == "models.py:4:":
        content = "import os\n\n\n" + content
    analysis = analyze(tmp_path, user_doc(), files={"features.py": FEATURES,
                                                    "models.py": content})
    code, pointer, message, _ = first_error(analysis)
    assert (code, pointer) == ("MLS605", "/model/estimator") and words in message, message


# -- the function ---------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "words"), [
    ("def build_modle(**params):\n    pass\n", "did you mean 'build_modle'?"),
    ("class build_model:\n    pass\n", "a class"),
    ("async def build_model():\n    pass\n", "async"),
    ("from sklearn.linear_model import LogisticRegression as build_model\n", "imported"),
    ("build_model = lambda **params: None\n", "assigned"),
    ("if True:\n    def build_model(**params):\n        pass\n", "inside another block"),
    ("class Holder:\n    def build_model(self):\n        pass\n", "inside another block"),
    ("", "add 'def build_model(...):'"),
])
def test_the_function_must_be_a_top_level_def(tmp_path, source, words):
    analysis = analyze(tmp_path, user_doc(), files={"features.py": FEATURES,
                                                    "models.py": source})
    code, pointer, message, hint = first_error(analysis)
    assert (code, pointer) == ("MLS606", "/model/estimator")
    assert words in message + " " + (hint or ""), (message, hint)


def test_the_last_def_of_a_name_is_the_one_checked(tmp_path):
    source = "def build_model(x):\n    pass\n\n\ndef build_model(c=1.0):\n    pass\n"
    analysis = analyze(tmp_path, user_doc(), files={"features.py": FEATURES,
                                                    "models.py": source})
    assert analysis.errors == []
    assert analysis.system.model.estimator.factory.line == 5


@pytest.mark.parametrize(("signature", "params", "pointer", "words"), [
    ("c=1.0", {"cc": 1.0}, "/model/params/cc", "did you mean 'c'?"),
    ("", {"c": 1.0}, "/model/params/c", "add 'c'"),
    ("c, /", {"c": 1.0}, "/model/params/c", "does not accept"),
    ("c, depth", {"c": 1.0}, "/model/estimator", "needs depth"),
    ("c, *, depth", {"c": 1.0}, "/model/estimator", "needs depth"),
    ("x, /, c=1.0", {"c": 1.0}, "/model/estimator", "positional-only"),
])
def test_an_estimator_factory_must_take_the_params_as_keywords(tmp_path, signature, params,
                                                               pointer, words):
    source = f"def build_model({signature}):\n    pass\n"
    analysis = analyze(tmp_path, user_doc(params=params), files={"features.py": FEATURES,
                                                                 "models.py": source})
    code, got, message, hint = first_error(analysis)
    assert (code, got) == ("MLS607", pointer)
    assert words in message + " " + (hint or "") and "models.py:1:" in message, message


@pytest.mark.parametrize("signature", ["c=1.0, random_state=None", "**params",
                                       "c, **params", "c=1, *, depth=3"])
def test_factories_that_fit(tmp_path, signature):
    source = f"def build_model({signature}):\n    pass\n"
    analysis = analyze(tmp_path, user_doc(), files={"features.py": FEATURES,
                                                    "models.py": source})
    assert analysis.errors == []
    seeded = "random_state" in signature
    assert ("random_state" in dict(analysis.system.model.estimator.params)) == seeded


@pytest.mark.parametrize(("signature", "fits"), [
    ("a, b", True), ("a, b, c=1", True), ("*columns", True), ("a, *rest", True),
    ("a, /, b", True), ("a, b, *, scale=2.0", True),
    ("a", False), ("a, b, c", False), ("a, b, *, scale", False), ("**kw", False),
])
def test_a_python_transform_takes_its_inputs_positionally(tmp_path, signature, fits):
    source = f"def ratio({signature}):\n    return 0\n"
    analysis = analyze(tmp_path, user_doc(estimator=None), files={"features.py": source})
    if fits:
        assert analysis.errors == []
    else:
        code, pointer, message, _ = first_error(analysis)
        assert (code, pointer) == ("MLS607", "/features/transforms/1/python")
        assert "features.py:1: def ratio(" in message


def test_imports_of_the_projects_own_modules_are_refused(tmp_path):
    for source, words in [("from . import helpers\n", "relative import"),
                          ("from .helpers import x\n", "relative import"),
                          ("import helpers\n", "imports 'helpers'"),
                          ("from helpers.sub import x\n", "imports 'helpers'"),
                          ("def ratio(a, b):\n    import models\n    return a\n",
                           "imports 'models'")]:
        analysis = analyze(tmp_path, user_doc(estimator=None), files={
            "features.py": source + FEATURES, "helpers.py": "x = 1\n", "models.py": MODELS})
        code, pointer, message, _ = first_error(analysis)
        assert (code, pointer) == ("MLS608", "/features/transforms/1/python"), message
        assert words in message


def test_transform_inputs_resolve_like_other_references(tmp_path):
    bad = dict(TRANSFORM, inputs=["customer_profile.support_call", "customer_profile.x"])
    code, pointer, _, hint = first_error(analyze(tmp_path, user_doc(bad, estimator=None)))
    assert (code, pointer, hint) == ("MLS204", "/features/transforms/1/inputs/0",
                                     "did you mean 'support_calls'?")
    twice = dict(TRANSFORM, inputs=["customer_profile.support_calls"] * 2)
    assert first_error(analyze(tmp_path, user_doc(twice, estimator=None)))[:2] == (
        "MLS206", "/features/transforms/1/inputs/1")


@pytest.mark.parametrize(("transform", "code", "pointer"), [
    ({"name": "t", "python": "features.py:ratio"}, "MLS102", "/features/transforms/1/python"),
    ({"name": "t"}, "MLS102", "/features/transforms/1/name"),
    ({"name": "t", "expr": "1", "python": "features.py:ratio", "inputs": ["x"]}, "MLS103",
     "/features/transforms/1/python"),
    ({"name": "t", "expr": "monthly_charges", "inputs": ["customer_profile.tenure_months"]},
     "MLS103", "/features/transforms/1/inputs"),
])
def test_a_transform_takes_expr_or_python_with_inputs(tmp_path, transform, code, pointer):
    assert first_error(analyze(tmp_path, user_doc(transform, estimator=None)))[:2] == (
        code, pointer)


def test_a_model_takes_algorithm_or_estimator(tmp_path):
    doc = user_doc(estimator=None)
    del doc["model"]["algorithm"]
    assert first_error(analyze(tmp_path, doc))[:2] == ("MLS102", "/model/task")


# -- compile --------------------------------------------------------------------------------
def chained_doc() -> dict:
    doc = user_doc()
    doc["features"]["transforms"].append({"name": "log_ratio", "python": "features.py:log1p",
                                          "inputs": ["calls_ratio"]})
    doc["model"]["features"].append("log_ratio")
    return doc


CHAINED = FEATURES + "\n\ndef log1p(x):\n    return np.log1p(x)\n"
MESSY = "from sklearn.linear_model import LogisticRegression\ndef build_model( c = 1.0 ,random_state=None ):\n  return LogisticRegression(C=c,random_state=random_state)\n"  # noqa: E501


def test_compile_copies_the_users_files_as_written_and_is_deterministic(tmp_path):
    analysis = analyze(tmp_path, chained_doc(), files={"features.py": CHAINED,
                                                       "models.py": MESSY})
    assert analysis.errors == []
    system = analysis.system
    tree = compile_system(system, CompileOptions())
    assert tree["churn_system/user_code/models.py"] == MESSY.encode()  # not reformatted
    assert tree["churn_system/user_code/features.py"] == CHAINED.encode()
    assert b"features.py" in tree["churn_system/user_code/__init__.py"]
    assert compile_system(system).as_dict() == tree.as_dict()
    again = SystemIR.model_validate_json(system.model_dump_json())
    assert compile_system(again).as_dict() == tree.as_dict()
    flows = tree["pipelines/flows.py"].decode()
    assert "from churn_system.user_code import models as user_models" in flows
    assert "user_models.build_model(c=0.5, random_state=7, **on_device)" in flows
    transforms = tree["churn_system/transforms.py"].decode()
    assert "user_features.ratio(" in transforms and "user_features.log1p(" in transforms
    # the chained transform is computed after the one it reads
    order = transforms[transforms.index("TRANSFORMS = {"):]
    assert order.index('"calls_ratio"') < order.index('"log_ratio"')
    bento = tree["service/bentofile.yaml"].decode()
    assert '"churn_system/user_code/**/*.py"' in bento
    # the generated code around the user's passes the linters; the user's own is theirs
    out = tmp_path / "out"
    for path, content in tree.items():
        if "/user_code/" not in path or path.endswith("__init__.py"):
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
    for args in (["check", "--isolated", "--no-cache", "."],
                 ["format", "--isolated", "--no-cache", "--check", "."]):
        proc = subprocess.run([_ruff(), *args], cwd=out, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_generated_transforms_run_the_users_functions_in_order(tmp_path):
    analysis = analyze(tmp_path, chained_doc(), files={"features.py": CHAINED,
                                                       "models.py": MODELS})
    out = tmp_path / "gen"
    for path, content in compile_system(analysis.system).items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    script = (
        "import json, numpy as np, pandas as pd\n"
        "from churn_system.transforms import model_columns, transform_frame\n"
        "calls, tenure = np.array([3, 0, 5]), np.array([2, 0, 10])\n"
        "cols = model_columns({'customer_profile__tenure_months': tenure,\n"
        "    'customer_profile__monthly_charges': np.array([10.0, 20.0, 30.0]),\n"
        "    'customer_profile__support_calls': calls,\n"
        "    'customer_profile__is_monthly_contract': np.array([1, 0, 1])})\n"
        "frame = transform_frame(pd.DataFrame({'customer_profile__support_calls': [3, None],\n"
        "    'customer_profile__tenure_months': [2, 4],\n"
        "    'customer_profile__monthly_charges': [1.0, 2.0]}))\n"
        "print(json.dumps({'ratio': cols['calls_ratio'].tolist(),\n"
        "    'log': cols['log_ratio'].tolist(), 'frame': frame['log_ratio'].tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=out, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [str(out), str(Path(__file__).parent.parent)])))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["ratio"] == [1.5, 0.0, 0.5]
    assert got["log"] == pytest.approx(np.log1p([1.5, 0.0, 0.5]).tolist())
    assert got["frame"][0] == pytest.approx(float(np.log1p(1.5)))
    assert np.isnan(got["frame"][1])  # a row missing an input: NaN, as for expr transforms


def test_input_schema_passes_earlier_transform_results_on():
    schema = InputSchema(
        fetch_dtypes={"v__a": "int64"},
        transforms={"double": (lambda c: c["v__a"] * 2, "int64"),
                    "plus": (lambda c: c["double"] + 1, "float64")},
        model_columns=("plus", "v__a"))
    cols = schema.columns({"v__a": np.array([1, 2])})
    assert cols["plus"].tolist() == [3.0, 5.0] and cols["plus"].dtype == np.float64
    frame = schema.transform_frame(pd.DataFrame({"v__a": [1.0, None, 3.0]}))
    assert frame["plus"].tolist()[0::2] == [3.0, 7.0] and np.isnan(frame["plus"][1])


# -- plan -----------------------------------------------------------------------------------
def test_a_change_of_a_user_file_alone_is_a_retrain_in_plan(tmp_path):
    before = analyze(tmp_path, user_doc()).system
    after = analyze(tmp_path, user_doc(), files={
        "features.py": FEATURES.replace("np.maximum(b, 1)", "np.maximum(b, 2)"),
        "models.py": MODELS}).system
    assert before.spec_hash == after.spec_hash  # the spec did not change
    changes = diff_systems(before, after)
    assert [(c.kind, c.name, c.consequence) for c in changes] == [
        ("user_code", "features.py", Consequence.RETRAIN)]
    actions = deploy_actions(changes)
    assert actions.train and actions.new_version and actions.verify
    assert diff_systems(after, analyze(tmp_path, user_doc(), files={
        "features.py": FEATURES.replace("np.maximum(b, 1)", "np.maximum(b, 2)"),
        "models.py": MODELS}).system) == ()


def test_a_cluster_service_image_is_tagged_by_the_user_files_too(tmp_path):
    from mlstack.codegen.backends.infra_model import infra_config

    def image(features: str) -> str:
        doc = user_doc()
        doc["target"] = {"kind": "kubernetes"}
        system = analyze(tmp_path, doc, files={"features.py": features,
                                               "models.py": MODELS}).system
        assert "churn_system/user_code/features.py" in compile_system(system)
        return infra_config(system)["service_image"]

    assert image(FEATURES) != image(FEATURES + "\n# changed\n")


def test_a_transform_the_model_does_not_read_is_not_computed(tmp_path):
    doc = user_doc(estimator=None)
    doc["model"]["features"].remove("calls_ratio")
    doc["model"]["features"].remove("customer_profile.support_calls")
    system = analyze(tmp_path, doc).system
    assert "customer_profile__support_calls" not in {f.column for f in system.model.fetch}
    tree = compile_system(system)
    transforms = tree["churn_system/transforms.py"].decode()
    assert '"calls_ratio": (' not in transforms  # defined, never called: its input is unread
    assert "calls_ratio" not in tree["feature_repo/repo.py"].decode()


def test_a_module_and_a_package_of_the_same_name_are_refused(tmp_path):
    analysis = analyze(tmp_path, user_doc(estimator="features/models.py:build_model"),
                       files={"features.py": FEATURES, "features/models.py": MODELS})
    code, pointer, message, _ = first_error(analysis)
    assert (code, pointer) == ("MLS604", "/model/estimator") and "features.py" in message
