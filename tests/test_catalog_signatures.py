"""The estimator catalog (mlstack/frontend/ir/catalog.py) is data, so lint needs no ML library;
this checks it against the installed libraries: every entry exists and accepts the params the
catalog lets a spec set, the seed and mlstack's defaults. A missing library or a module that
cannot be imported fails its entries: the test command installs every framework's extra."""

from __future__ import annotations

import importlib
import inspect

import pytest

from mlstack.frontend.ir import catalog

ENTRIES = sorted({(framework, module, cls, params)
                  for (framework, _task), table in catalog.ESTIMATORS.items()
                  for module, cls, params in table.values()})


def accepted_params(estimator) -> set[str]:
    """What the constructor takes: its signature, or (xgboost's wrappers take **kwargs on
    top of their base class's named params) the estimator's get_params()."""
    named = {n for n, p in inspect.signature(estimator).parameters.items()
             if p.kind is not p.VAR_KEYWORD}
    return named | set(estimator().get_params())


@pytest.mark.parametrize(("framework", "module", "cls", "params"), ENTRIES,
                         ids=[f"{f}-{c}" for f, _m, c, _p in ENTRIES])
def test_catalog_entry_matches_the_installed_library(framework, module, cls, params):
    assert framework in catalog.SUPPORTED_FRAMEWORKS
    library = catalog.FRAMEWORK_MODULES.get(framework, framework)
    try:
        importlib.import_module(library)
    except ImportError:  # scripts/test.sh installs every framework's extra
        pytest.fail(f"{library} is not installed (pip install 'mlstack[{framework}]')",
                    pytrace=False)
    try:
        estimator = getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # a wrong module path in the catalog
        pytest.fail(f"the catalog's {module} cannot be imported: {exc}", pytrace=False)
    accepted = accepted_params(estimator)
    defaults = catalog.DEFAULT_PARAMS.get(cls, {})
    seeded = {"random_state"} if cls in catalog.SEEDED else set()
    wanted = set(params) | seeded
    assert wanted <= accepted, sorted(wanted - accepted)
    assert not set(params) & set(catalog.DEVICE_PARAMS), "device params come from the target"
    estimator(**({"random_state": 0} if seeded else {}), **defaults)


def test_every_ranker_with_query_groups_is_in_the_catalog():
    classes = {cls for table in catalog.ESTIMATORS.values() for _m, cls, _p in table.values()}
    assert set(catalog.GROUP_FIT) <= classes
    assert set(catalog.FRAMEWORK_MODULES) | {"sklearn"} == set(catalog.SUPPORTED_FRAMEWORKS)
