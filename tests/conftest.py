import ast
import os
from pathlib import Path

import numpy as np
import pytest

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def worker_threads(environ: dict[str, str], cpus: int) -> dict[str, str]:
    """TensorFlow thread-pool sizes for one pytest-xdist worker: the usable cores divided by
    the workers, at least 1; empty outside xdist, and a variable already set is kept.

    Workers that each size their pools to the whole machine contend for its cores (on the
    2-core CI machine: two workers, one thread per pool). The subprocesses the tests start
    inherit the setting.
    """
    workers = environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return {}
    threads = str(max(1, cpus // int(workers)))
    return {name: threads for name in THREAD_VARIABLES if name not in environ}


def usable_cpus() -> int:
    """The cores this process may run on (all of them where the OS cannot say, as on macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Before any test module imports TensorFlow.
os.environ.update(worker_threads(os.environ, usable_cpus()))

# Tiny configuration used across tests (STYLE.md rule 11).
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)

# The integration tier (setup.cfg's `integration` marker): end-to-end tests that start
# subprocesses with TensorFlow, kernels, worker clusters or fresh virtual environments, and
# the export checks of every quantization, of the hybrid and of the per-op profiles and
# fidelity (the unit tier converts one small model per concept: float32, int8, Edge TPU).
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
            "test_int8_budget_quick_writes_every_rounding",
        }
    ),
    # Training, evaluation, a refused rerun and a failed --overwrite through the CLI, end to
    # end (the parts have unit tests: test_training, test_bad_inputs' train cases).
    "test_cli.py": frozenset(
        {"test_sigkill_mid_epoch_then_resume_continues", "test_train_and_evaluate_cli"}
    ),
    "test_device_install.py": ALL,
    "test_distribute.py": frozenset(
        {
            "test_mirrored_two_cpu_replicas_match_one_device",
            "test_two_worker_multiworker_run_on_loopback",
            "test_killed_worker_then_both_resume_from_the_last_completed_epoch",
        }
    ),
    # Int8 / int8_cpu / calibration files of a tiny ViT compared with Keras, op by op.
    "test_export_fidelity.py": frozenset(
        {
            "test_file_logits_match_keras_and_the_quantized_figures_are_sane",
            "test_the_logits_output_leaves_the_probabilities_unchanged",
            "test_minmax_calibration_is_the_default_file_bit_for_bit",
            "test_quick_fidelity_benchmark_variants_int16x8_and_dynamic",
            "test_smoothed_float32_file_computes_the_unsmoothed_logits",
        }
    ),
    # Per-op profiles of the int8 files (symmetric matmul ranges, no-op ADDs, int8_cpu).
    "test_export_profile.py": frozenset(
        {
            "test_int8_matmuls_have_zero_point_zero_right_operands_and_run_on_xnnpack",
            "test_without_symmetric_ranges_xnnpack_refuses_the_int8_matmuls",
            "test_symmetric_ranges_change_only_the_matmul_operands",
            "test_dropping_the_epsilon_adds_changes_no_output",
            "test_drop_noop_adds_keeps_an_add_that_changes_values",
            "test_int8_cpu_keeps_only_softmax_rsqrt_gelu_in_float_and_runs_on_xnnpack",
            "test_profile_cli",
        }
    ),
    # Every quantization (float16, dynamic, int8_cpu, int16x8) and the hybrid's export.
    "test_export_tflite.py": frozenset(
        {
            "test_export_writes_every_file_and_the_report",
            "test_int8_cpu_file_agrees_like_int8_with_float_islands",
            "test_other_quantizations",
            "test_float_compute_op_definition",
            "test_report_gives_each_files_oldest_runtime",
            "test_predict_names_the_op_an_old_runtime_lacks",
            "test_report_gives_fidelity_figures_for_every_file",
            "test_hybrid_float32_and_int8_files",
            "test_hybrid_edgetpu_file_maps_every_op",
            "test_hybrid_float16_and_dynamic_files_agree_with_keras",
            # A second int8 conversion, with MSE calibration and smoothing (the unit tier
            # converts with the default calibration and checks these flags' bad values).
            "test_cli_int8_options_mse_calibration_smoothing_and_spans",
            # Two more exports (smoothing and GPTQ for a dynamic-range file, and the plain one).
            "test_report_names_the_calibration_sample_of_a_dynamic_export_that_reads_one",
            # The CLI's table and refused rerun around a float32 export (the bad-input case
            # `tflite-output-exists` checks the same refusal in the unit tier).
            "test_cli_prints_the_table",
            # The CLI's progress lines and hidden converter logs, captured at the file
            # descriptors around a whole float32 + int8 export.
            "test_cli_shows_progress_and_hides_converter_logs",
        }
    ),
    # int8 and Edge TPU conversions of the split MLPs (the unit tier checks the split's
    # float32 file).
    "test_export_mlp_spans.py": frozenset(
        {
            "test_split_mlps_narrow_the_int8_error_on_the_stress_model",
            "test_split_mlps_edgetpu_graph_maps_every_op",
        }
    ),
    # A training run of the hybrid through the CLI, end to end (its flags, model and
    # loading have unit tests).
    "test_hybrid.py": frozenset({"test_train_cli_trains_a_tiny_hybrid"}),
    # model.fit, predict and evaluate traced in one test (the class-token path of inference
    # and of training have unit tests of their own).
    "test_inference.py": frozenset(
        {"test_fit_runs_the_full_graph_predict_and_evaluate_the_class_token"}
    ),
    # A model trained for epochs, then saved and loaded (the parts have unit tests).
    "test_model.py": frozenset(
        {"test_non_square_images_end_to_end", "test_logits_model_learns_with_from_logits_loss"}
    ),
    "test_notebooks.py": frozenset(
        {
            "test_notebook_runs",
            "test_finetune_notebook_without_the_fixture",
            "test_runner_fails_with_the_cells_error",
            "test_runner_refuses_writes_outside_the_output_folder",
        }
    ),
    # A fresh interpreter that imports Keras first, then loads a saved model.
    "test_package.py": frozenset({"test_import_after_keras_registers_the_layers_for_load_model"}),
    "test_readme_examples.py": frozenset({"test_python_block_runs", "test_quickstart_learns"}),
    # Two complete training runs compared weight for weight; four runs into one folder
    # with --overwrite, failing at each step (a fault-recovery case).
    "test_training.py": frozenset(
        {
            "test_same_seed_same_result",
            "test_overwrite_keeps_the_previous_run_until_an_epoch_completes",
        }
    ),
    # The plotting CLI end to end (every plot function has a unit test).
    "test_visualize.py": frozenset({"test_cli_writes_every_plot"}),
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


@pytest.fixture(scope="module")
def tiny_vit():
    """A tiny ViT with a random head (logits with a spread) and 8 normalised images."""
    from keras_vit import ViT

    model = ViT(**TINY, num_classes=10, seed=1)
    rng = np.random.default_rng(0)
    for variable in model.get_layer("head").weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
    images = rng.uniform(-1.0, 1.0, (8, 32, 32, 3)).astype(np.float32)
    return model, images
