"""Every docstring example of the package runs: the examples are part of the docs.

The package is imported by its installed name (``mlpulse``), as users import it; pytest's
``--doctest-modules`` over ``app/`` would import a second copy of every module under the
name of the source directory.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mlpulse

MODULES = sorted(m.name for m in pkgutil.walk_packages(mlpulse.__path__, "mlpulse.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test)   # prints what failed (pytest shows it)
    assert runner.summarize(verbose=False).failed == 0


def test_every_module_is_found():
    assert {"mlpulse.pipeline", "mlpulse.detectors.drift", "mlpulse.sdk.producer"} <= set(MODULES)
