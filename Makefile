# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint format test test-fast demo demo-export notebooks bench bench-quick bench-peers clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Two pytest workers (pytest-xdist), one per core of the 2-core CI machine; `--dist loadfile`
# keeps each test file, and so its module and session fixtures, on one worker; tests/conftest.py
# sizes each worker's TensorFlow thread pools to its share of the cores. TEST_WORKERS=0 runs
# everything in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test: lint
	$(PYTEST)

# The unit tier: everything but the `slow` and `integration` markers (setup.cfg).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not integration"

# Trains the default small ViT on digits into demo_out/ckpt (replacing it), evaluates it,
# then exports it to TFLite (float32, int8, Edge TPU int8) and evaluates the int8 file.
demo: $(STAMP)
	$(BIN)/python -m keras_vit.train --output demo_out/ckpt --overwrite
	$(BIN)/python -m keras_vit.evaluate demo_out/ckpt
	$(MAKE) --no-print-directory demo-export CKPT=demo_out/ckpt

# Export step of the demo: int8 + float32 TFLite (and the Edge TPU graph) of a checkpoint,
# with the report table, then the int8 file on the test split. CKPT is the checkpoint folder.
CKPT ?= demo_out/ckpt
EXPORT_DIR ?= demo_out/tflite
demo-export: $(STAMP)
	$(BIN)/python -m export.tflite $(CKPT) --output $(EXPORT_DIR) --quantize float32 int8 int8_cpu --edgetpu --force
	$(BIN)/python -m export.evaluate_tflite $(EXPORT_DIR)/model_int8.tflite $(CKPT)

# Benchmarks (issue 7). Peers are optional and never runtime dependencies:
# - timm on CPU PyTorch lives in its own interpreter, .venv-peers (~4.8 GB). torchvision's
#   PyPI wheel loads only against the CUDA build of torch (it runs on the CPU here), and
#   PIP_FIND_LINKS is unset and torch pinned with `===` (exactly 2.13.0, not 2.13.0+cpu) so
#   that pip does not pick a local CPU-only torch wheel from a find-links folder.
# - ONNX Runtime, OpenVINO and NNCF for `benchmarks/fidelity.py --peers` go into .venv-peers too.
# - keras-hub goes into .venv beside TensorFlow. keras-hub 0.32.0 pins kagglesdk==0.1.28
#   while the dev pins hold kagglesdk 0.1.37 (for kagglehub), so it is installed with
#   --no-deps together with the three imports it needs at import time; its ViT needs none
#   of kagglesdk, tensorflow-text or tokenizers to run.
PEERS ?= .venv-peers
BENCH_OUTPUT ?= results.json
ONNX_PEER_PINS = onnx==1.23.2 onnxruntime==1.31.1 openvino==2026.4.1 nncf==3.4.0
KERAS_HUB_PINS = keras-hub==0.32.0 tensorflow-text==2.21.1 tokenizers==0.23.3 sentencepiece==0.2.3
bench-peers: $(STAMP)
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	env -u PIP_FIND_LINKS $(PEERS)/bin/pip install --quiet torch===2.13.0 torchvision==0.28.0 pyyaml huggingface_hub safetensors pillow
	$(PEERS)/bin/pip install --quiet --no-deps timm==1.0.31
	$(PEERS)/bin/pip install --quiet $(ONNX_PEER_PINS)
	$(BIN)/pip install --quiet --no-deps $(KERAS_HUB_PINS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --output $(BENCH_OUTPUT) --wait-idle 1200 --force
	$(BIN)/python benchmarks/kernels.py --output $(basename $(BENCH_OUTPUT))_kernels.json --force
	$(BIN)/python benchmarks/xla_profile.py --output $(basename $(BENCH_OUTPUT))_xla_profile.json --force
	$(BIN)/python benchmarks/xla_profile.py --model digits --train --batch 32 --runs 20 \
		--output $(basename $(BENCH_OUTPUT))_xla_profile_train.json --force

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --output $(BENCH_OUTPUT) --force

# Runs the notebooks top to bottom in notebooks/ (each writes only into
# notebooks/notebook_out/) and keeps the executed copies, with their outputs, as
# notebooks/notebook_out/executed_<name>.ipynb. `make test` runs them too (tests/test_notebooks.py).
notebooks: $(STAMP)
	cd notebooks && mkdir -p notebook_out && for notebook in *.ipynb; do \
		$(abspath $(BIN))/jupyter-execute --timeout=300 \
			--output='notebook_out/executed_{notebook_name}' "$$notebook" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
