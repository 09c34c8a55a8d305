"""The test tiers: every test the integration list names exists, and the marker is applied."""

import ast
from pathlib import Path

import pytest
from conftest import ALL, INTEGRATION, is_integration, module_test_names, worker_threads

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", sorted(INTEGRATION))
def test_every_listed_integration_test_exists(module):
    path = TESTS / module
    assert path.is_file(), f"tests/{module} is listed in conftest.INTEGRATION but does not exist"
    names = INTEGRATION[module]
    if names != ALL:
        missing = sorted(names - module_test_names(path))
        assert not missing, f"conftest.INTEGRATION names tests missing from {module}: {missing}"


def test_is_integration_by_module_and_name():
    assert is_integration("test_notebooks.py", "test_notebook_runs")
    assert not is_integration("test_notebooks.py", "test_every_notebook_is_listed")
    assert is_integration("test_device_install.py", "test_anything")
    assert not is_integration("test_layers.py", "test_notebook_runs")


def test_this_module_is_in_the_unit_tier(request):
    assert request.node.get_closest_marker("integration") is None


def test_integration_dict_names_each_module_once():
    # A dict literal keeps the last of two equal keys: the first list would be dropped silently.
    tree = ast.parse((TESTS / "conftest.py").read_text())
    keys = [
        key.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "INTEGRATION"
        for key in node.value.keys
    ]
    assert keys and len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_xdist_workers_share_the_cores_between_their_thread_pools():
    both = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    assert worker_threads({"PYTEST_XDIST_WORKER_COUNT": "2"}, cpus=2) == both
    assert worker_threads({"PYTEST_XDIST_WORKER_COUNT": "2"}, cpus=16) == {
        name: "8" for name in both
    }
    assert worker_threads({"PYTEST_XDIST_WORKER_COUNT": "4"}, cpus=2) == both
    assert worker_threads({}, cpus=2) == {}  # one process: TensorFlow's own sizes
    chosen = {"PYTEST_XDIST_WORKER_COUNT": "2", "TF_NUM_INTRAOP_THREADS": "2"}
    assert worker_threads(chosen, cpus=2) == {"TF_NUM_INTEROP_THREADS": "1"}
