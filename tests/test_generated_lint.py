"""Generated files pass the user's own linters with their DEFAULT settings, run from the
root of the generated project, as a user would: `yamllint --strict -d default` on every YAML
file (warnings count: `document-start` included) and `ruff check --isolated` plus
`ruff format --isolated --check` (ruff's defaults, line length 88) on every Python file.

The goldens in generated/<blueprint>/ are what is linted: test_golden.py holds them equal to
the compiler's output byte for byte. yamllint comes with the `test` extra; ruff is the pinned
core dependency the compiler formats with.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlstack.codegen.formatter import _ruff
from mlstack.codegen.jinja import yaml_text
from tests.conftest import GENERATED

BLUEPRINTS = sorted(p.name for p in GENERATED.iterdir() if p.is_dir())
YAML_SUFFIXES = (".yaml", ".yml")


def _files(root, suffixes) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts)


def _run(command: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_generated_yaml_passes_yamllint_defaults(name):
    root = GENERATED / name
    files = _files(root, YAML_SUFFIXES)
    assert files, f"generated/{name} has no YAML file"
    proc = _run([sys.executable, "-m", "yamllint", "--strict", "-d", "default",
                 "-f", "parsable", *files], root)
    assert proc.returncode == 0, f"generated/{name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_generated_python_passes_ruff_check_defaults(name):
    root = GENERATED / name
    assert _files(root, (".py",)), f"generated/{name} has no Python file"
    proc = _run([_ruff(), "check", "--isolated", "--no-cache", "--output-format=concise", "."],
                root)
    assert proc.returncode == 0, f"generated/{name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_generated_python_passes_ruff_format_check_defaults(name):
    root = GENERATED / name
    proc = _run([_ruff(), "format", "--isolated", "--no-cache", "--check", "."], root)
    assert proc.returncode == 0, f"generated/{name}:\n{proc.stdout}{proc.stderr}"


TEXT = st.text(alphabet=st.sampled_from(list('ab "\\\t\né:#-\'{}[]&*!|>%@`')), max_size=150)
WORDS = st.lists(st.text(alphabet="abcxyz.,:", min_size=1, max_size=12), max_size=30)


@given(value=TEXT, column=st.integers(0, 40), indent=st.integers(1, 8),
       width=st.integers(10, 100))
def test_yaml_text_reads_back_exactly(value, column, indent, width):
    """The `yaml_text` filter (long user text in YAML templates, e.g. a bentofile's
    description) breaks lines only where YAML folds them back into the same single space."""
    text = yaml_text(value, column, indent, width)
    assert yaml.safe_load("key: " + text) == {"key": value}
    nested = "outer:\n  key: " + text.replace("\n", "\n  ")
    assert yaml.safe_load(nested) == {"outer": {"key": value}}


@given(words=WORDS, column=st.integers(0, 20), indent=st.integers(1, 4))
def test_yaml_text_fits_eighty_columns_when_every_word_does(words, column, indent):
    text = yaml_text(" ".join(words), column, indent)
    lines = text.split("\n")
    assert len(lines[0]) <= 80 - column
    assert all(len(line) <= 80 for line in lines[1:])


def test_yaml_text_wraps_a_description():
    value = "Predict which customers will churn in the next month, served on Kubernetes."
    assert yaml_text(value, len("description: ")) == (
        '"Predict which customers will churn in the next month, served on\n  Kubernetes."')
