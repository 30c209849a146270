"""Request-time fields (features.request_sources, a Feast RequestSource): resolved like view
fields in transforms and model features, checked against the label source that logs them
for training, and compiled into the request schema, the shared input schema and the Feast
repo."""

from __future__ import annotations

import copy

import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import load_spec_file
from tests.conftest import BLUEPRINTS

CHURN = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data


def _spec(edit=None) -> dict:
    doc = copy.deepcopy(CHURN)
    doc["features"]["request_sources"] = [
        {"name": "offer", "description": "The retention offer shown with the request.",
         "fields": {"discount": "float64"}}]
    doc["sources"][1]["columns"]["discount"] = "float64"  # churn_labels logs it
    doc["features"]["transforms"].append(
        {"name": "discounted_charges", "expr": "monthly_charges * (1 - discount)"})
    doc["model"]["features"] += ["offer.discount", "discounted_charges"]
    if edit:
        edit(doc)
    return doc


def _analyze(doc, tmp_path):
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return analyze_spec(spec)


def test_request_fields_resolve_in_transforms_and_model_features(tmp_path):
    analysis = _analyze(_spec(), tmp_path)
    assert [d for d in analysis.diagnostics] == []
    system = analysis.system
    m = system.model
    assert [(f.name, f.dtype) for f in m.request_fields] == [("discount", "float64")]
    by_ref = {f.ref: f for f in m.features}
    assert (by_ref["offer.discount"].kind, by_ref["offer.discount"].column) == (
        "request", "discount")
    transform = next(t for t in system.transforms if t.name == "discounted_charges")
    request_input = next(i for i in transform.inputs if i.field == "discount")
    assert (request_input.kind, request_input.view, request_input.column) == (
        "request", "offer", "discount")
    assert "discount" not in {f.column for f in m.fetch}  # not read from the feature store
    assert [k.name for k in m.request_keys] == ["customer_id"]


def test_label_source_must_log_each_request_field(tmp_path):
    def drop(doc):
        del doc["sources"][1]["columns"]["discount"]

    found = [(d.code, d.pointer) for d in _analyze(_spec(drop), tmp_path).errors]
    assert found == [("MLS207", "/features/request_sources/0/fields/discount")]

    def retype(doc):
        doc["sources"][1]["columns"]["discount"] = "string"

    errors = _analyze(_spec(retype), tmp_path).errors
    assert [(d.code, d.pointer) for d in errors] == [
        ("MLS209", "/features/request_sources/0/fields/discount")]
    assert "float64 but string" in errors[0].message
    assert errors[0].location.line > 0


def test_a_request_field_cannot_be_a_join_key_or_a_transform(tmp_path):
    def key(doc):
        doc["features"]["request_sources"][0]["fields"]["customer_id"] = "int64"

    assert ("MLS209", "/features/request_sources/0/fields/customer_id") in [
        (d.code, d.pointer) for d in _analyze(_spec(key), tmp_path).errors]

    def transform(doc):
        doc["features"]["request_sources"][0]["fields"]["charges_per_tenure"] = "float64"

    assert ("MLS206", "/features/request_sources/0/fields/charges_per_tenure") in [
        (d.code, d.pointer) for d in _analyze(_spec(transform), tmp_path).errors]

    def unknown(doc):
        doc["model"]["features"].append("offer.coupon")

    errors = _analyze(_spec(unknown), tmp_path).errors
    assert [d.code for d in errors] == ["MLS204"]
    assert "request source 'offer' has no field 'coupon'" in errors[0].message

    def misspelt_view_field(doc):
        doc["model"]["features"].append("customer_profile.tenure")

    errors = _analyze(_spec(misspelt_view_field), tmp_path).errors
    assert [d.code for d in errors] == ["MLS204"]
    assert "feature view 'customer_profile' has no field 'tenure'" in errors[0].message
    assert "tenure_months" in errors[0].hint


def test_request_fields_compile_into_the_request_schema_and_the_feast_repo(tmp_path):
    system = _analyze(_spec(), tmp_path).system
    tree = compile_system(system, CompileOptions(project_dir=".."))
    files = {path: content.decode() for path, content in tree.items()}
    features = files["churn_system/features.py"]
    assert 'REQUEST_FIELDS = {"discount": "float64"}' in features
    service = files["service/service.py"]
    assert "    discount: float = Field(\n        allow_inf_nan=False,\n    )" in service
    assert 'request_fields={"discount": "float64"}' in service
    assert '"discount": 0.0' in service  # the warm-up row carries it
    repo = files["feature_repo/repo.py"]
    assert "offer_request = RequestSource(" in repo
    assert "sources=[\n        customer_profile_view,\n        offer_request,\n    ]" in repo
    assert "request=tuple(features.REQUEST_FIELDS)" in files["churn_system/pipeline.py"]
