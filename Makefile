# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint format test test-fast demo demo-export notebooks clean

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

test: lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

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
	$(BIN)/python -m export.tflite $(CKPT) --output $(EXPORT_DIR) --quantize float32 int8 --edgetpu --force
	$(BIN)/python -m export.evaluate $(EXPORT_DIR)/model_int8.tflite $(CKPT)

# Runs the four notebooks top to bottom in notebooks/ (each writes only into
# notebooks/notebook_out/) and keeps the executed copies, with their outputs, as
# notebooks/notebook_out/executed_<name>.ipynb. `make test` runs them too (tests/test_notebooks.py).
notebooks: $(STAMP)
	cd notebooks && mkdir -p notebook_out && for notebook in *.ipynb; do \
		$(abspath $(BIN))/jupyter-execute --timeout=300 \
			--output='notebook_out/executed_{notebook_name}' "$$notebook" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
