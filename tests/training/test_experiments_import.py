"""Every experiment module imports: they are run by hand, so nothing else would notice a broken import
(the paths refactor once left `training.experiments.cache` importing names that no longer existed)."""

import importlib
import pkgutil

import pytest

import training.experiments

MODULES = sorted(m.name for m in pkgutil.iter_modules(training.experiments.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_experiment_module_imports(name):
    importlib.import_module(f"training.experiments.{name}")
