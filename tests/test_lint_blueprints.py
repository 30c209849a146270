"""Every bundled blueprint lints clean and resolves to an IR that round-trips through JSON."""

import pytest

from mlstack.cli.main import main
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.ir.nodes import SystemIR
from tests.conftest import BLUEPRINTS

SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_blueprint_lints_clean(spec):
    analysis = analyze_spec(spec)
    assert [d for d in analysis.errors] == []
    assert analysis.system is not None


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_ir_json_round_trip_is_lossless(spec):
    system = analyze_spec(spec).system
    again = SystemIR.model_validate_json(system.model_dump_json())
    assert again == system
    assert again.model_dump_json() == system.model_dump_json()


def test_cli_lint_exit_codes(tmp_path, capsys):
    assert main(["lint", str(SPECS[0])]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mlstack/v1\nkind: System\nmetadatta: {}\n")
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "MLS101" in out and "did you mean 'metadata'?" in out
    assert main(["lint", str(tmp_path / "missing.yaml")]) == 2
