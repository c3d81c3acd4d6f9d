# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test fuzz bench gpu-wheels clean

$(STAMP): pyproject.toml
	@echo "==> Creating $(VENV) with $(PYTHON) and installing gpu_tiler[test,opencl] (editable)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,opencl]"
	@touch $@
	@echo "==> $(VENV) is ready"

demo: $(STAMP)
	@echo "==> Running the demo: a generated nuclei image denoised, thresholded, labelled and measured, tile by tile"
	$(BIN)/gpu-tiler demo --output demo-output

test: $(STAMP)
	@echo "==> Running the tests (GPU tests are skipped, with the reason, where no CUDA GPU works)"
	$(BIN)/python -m pytest

fuzz: $(STAMP)
	@echo "==> Property-based tests with thousands of examples (profile fuzz): tiled == whole image"
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_properties.py -q -p no:cacheprovider --durations=0

bench: $(STAMP)
	@echo "==> Running the CPU benchmarks; figures go to benchmarks/RESULTS.md by hand"
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/memory.py

# Wheels a GPU machine without network may lack (Python 3.12, manylinux x86_64), for benchmarks/gpu_check.sh.
GPU_WHEELS := .gpu-wheels
gpu-wheels:
	@echo "==> Downloading Python 3.12 wheels into $(GPU_WHEELS) for an offline GPU machine"
	@mkdir -p $(GPU_WHEELS)
	$(PYTHON) -m pip download --quiet --dest $(GPU_WHEELS) --only-binary=:all: \
		--python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
		--implementation cp "dask[array]>=2024.8" "zarr>=3.0" psutil hatchling tqdm hypothesis
	-$(PYTHON) -m pip download --quiet --dest $(GPU_WHEELS) --only-binary=:all: --no-deps \
		--python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
		--implementation cp cucim-cu13 || echo "(cucim-cu13 wheel not available: GPU check runs without cuCIM)"
	@du -sh $(GPU_WHEELS)
	@echo "==> Done: carry $(GPU_WHEELS) to the GPU machine (under 64 MiB in all)"

clean:
	rm -rf $(VENV) build dist demo-output benchmarks/out *.egg-info
