"""Property: whatever a spec holds, lint answers with diagnostics, never with an exception.

Random mutations of every blueprint (keys dropped or renamed, values of the wrong type,
dangling references, hostile strings, random Unicode, deep nesting, damaged text) go through
`analyze_spec`; every diagnostic it returns is well formed and renders in every format.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlstack.diagnostics.codes import CODES
from mlstack.diagnostics.formats import FORMATS, render
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import load_spec_file
from tests.conftest import BLUEPRINTS

SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))
DOCUMENTS = {p.parent.name: load_spec_file(p).data for p in SPECS}
TEXTS = {p.parent.name: p.read_text() for p in SPECS}
HOSTILE = ["../../etc/passwd", "/etc/passwd", "os.system", "__import__('os').system('id')",
           "a; rm -rf /", "$(id)", "${HOME}", "{{ 7 * 7 }}", "{% raw %}", "'); DROP TABLE x;--",
           "us\u0435rs", "\u202eevil", "CON", "nul", "class", "None", "lambda: 0", "\\\\server\\x",
           "C:\\Windows", "s3://bucket/key", "a" * 300, "", " ", "\n", "-1", "1e999", "0x10",
           "ndcg@0", ">= nan", "> inf", "* * * * * *", "@never", "9999999999999999999w",
           "spend.__class__.__mro__", "x if y else z", "customer_profile.__dict__",
           "\udc00", "a\ud83d", "4Ti", "nvidia-b300"]  # lone surrogates: YAML writes escapes
# MLSTACK_FUZZ_EXAMPLES=5000 for a deeper hunt; the default keeps the test a few seconds long
SETTINGS = settings(max_examples=int(os.environ.get("MLSTACK_FUZZ_EXAMPLES", "60")),
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCRATCH = Path(tempfile.mkdtemp(prefix="mlstack-fuzz-"))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _get(doc, path):
    node = doc
    for part in path:
        node = node[part]
    return node


def _parent(doc, path):
    return _get(doc, path[:-1])


def _nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(HOSTILE), st.lists(st.sampled_from(HOSTILE), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.integers(min_value=1, max_value=60).map(_nested),
)


def _mutate(doc, data) -> None:
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    parent = _parent(doc, path)
    key = path[-1]
    action = data.draw(st.sampled_from(["drop", "rename", "replace", "duplicate"]))
    if action == "drop":
        del parent[key]
    elif action == "rename" and isinstance(parent, dict):
        new = data.draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20),
                                  st.just(str(key) + "s"), st.just(str(key)[:-1])))
        parent[new] = parent.pop(key)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        names = sorted({_get(doc, p) for p in paths if isinstance(_get(doc, p), str)})
        parent[key] = data.draw(st.one_of(
            values, st.from_regex(r"\A[a-z][a-z0-9_]{0,8}(\.[a-z_]{1,8})?\Z"),
            st.sampled_from(names or ["x"])))  # dangling or crossed references


def _check(text_or_bytes, name: str) -> None:
    path = SCRATCH / f"{name}.yaml"
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes, encoding="utf-8", errors="surrogatepass")
    analysis = analyze_spec(path)  # must not raise
    for d in analysis.diagnostics:
        assert d.code in CODES, d
        assert d.location.line >= 1 and d.location.column >= 1, d
        assert isinstance(d.message, str) and d.message, d
    if not analysis.errors:
        assert analysis.system is not None
    for fmt in FORMATS:
        out = render(analysis.diagnostics, fmt)
        if fmt in ("json", "sarif"):
            json.loads(out)


@SETTINGS
@given(st.sampled_from(sorted(DOCUMENTS)), st.integers(min_value=1, max_value=4), st.data())
def test_mutated_documents_give_diagnostics_not_exceptions(blueprint, count, data):
    doc = copy.deepcopy(DOCUMENTS[blueprint])
    for _ in range(count):
        _mutate(doc, data)
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200)
    _check(text, "mutated")


@SETTINGS
@given(st.sampled_from(sorted(TEXTS)), st.data())
def test_damaged_text_gives_diagnostics_not_exceptions(blueprint, data):
    text = TEXTS[blueprint]
    start = data.draw(st.integers(min_value=0, max_value=len(text)))
    end = data.draw(st.integers(min_value=start, max_value=min(len(text), start + 40)))
    junk = data.draw(st.one_of(st.text(max_size=10), st.sampled_from(
        ["\t", "&a ", "*a", "<<: ", "!!python/object:os.system ", "---\n", "\ufeff", "{", "]",
         "\x00", "\udcff", ": ", "- ", "'", '"', "\r", "\\", "%YAML 1.1\n"])))
    damaged = text[:start] + junk + text[end:]
    if data.draw(st.booleans()):
        _check(damaged.encode("utf-8", errors="surrogateescape"), "damaged")
    else:
        _check(damaged.encode("utf-8", errors="replace"), "damaged")
