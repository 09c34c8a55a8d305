import ast
from pathlib import Path

import numpy as np
import pytest

# Tiny configuration used across tests (STYLE.md rule 11).
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)

# The integration tier (setup.cfg's `integration` marker): end-to-end tests that start
# subprocesses with TensorFlow, kernels, worker clusters or fresh virtual environments.
# `make test` runs them, `make test-fast` skips them. Marked here, by test module and test
# function name, so that the test files themselves need no edit; `ALL` marks a whole module.
# tests/test_tiers.py checks that every name below exists.
ALL = "*"
INTEGRATION: dict[str, str | frozenset[str]] = {
    "test_benchmarks.py": frozenset(
        {
            "test_quick_benchmark_produces_every_row",
            "test_existing_output_is_refused",
            "test_kernels_writes_every_row",
            "test_xla_profile_writes_the_op_table",
            "test_xla_profile_unknown_model_is_one_line",
        }
    ),
    "test_cli.py": frozenset({"test_sigkill_mid_epoch_then_resume_continues"}),
    "test_device_install.py": ALL,
    "test_distribute.py": frozenset(
        {
            "test_mirrored_two_cpu_replicas_match_one_device",
            "test_two_worker_multiworker_run_on_loopback",
            "test_killed_worker_then_both_resume_from_the_last_completed_epoch",
        }
    ),
    "test_export_fidelity.py": frozenset(
        {
            "test_quick_fidelity_benchmark_variants_and_int16x8",
            "test_smoothed_float32_file_computes_the_unsmoothed_logits",
        }
    ),
    "test_notebooks.py": frozenset(
        {
            "test_notebook_runs",
            "test_finetune_notebook_without_the_fixture",
            "test_runner_fails_with_the_cells_error",
            "test_runner_refuses_writes_outside_the_output_folder",
        }
    ),
    "test_readme_examples.py": frozenset({"test_python_block_runs", "test_quickstart_learns"}),
    # Two complete training runs compared weight for weight.
    "test_training.py": frozenset({"test_same_seed_same_result"}),
}


def is_integration(module: str, function: str) -> bool:
    """Whether test `function` of test file `module` (a file name) is in the integration tier."""
    names = INTEGRATION.get(module, frozenset())
    return names == ALL or function in names


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, "originalname", item.name)
        if is_integration(item.path.name, function):
            item.add_marker(pytest.mark.integration)


def module_test_names(path: Path) -> set[str]:
    """The names of the module-level `test_*` functions of a test file."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
