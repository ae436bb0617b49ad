# Two entry points: `make demo` (the flagship conversion on the real MODNet) and `make test`.
# Both create or refresh .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.porter-installed
OUT ?= out/modnet_photographic

.PHONY: venv demo test lint clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# pip prints what it collects and installs (a fresh .venv takes minutes: TensorFlow, Paddle).
	$(PY) -m pip install --upgrade --progress-bar off pip
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[all]'
	# These two declare dependencies porter does not use (torchvision; onnx<=1.17 and friends)
	# that would replace the pinned torch/onnx; install them alone. See README "Dependencies".
	$(PY) -m pip install --progress-bar off --no-deps onnx2torch==1.5.15 paddle2onnx==2.1.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m porter fetch modnet_photographic
	$(PY) -m porter convert modnet_photographic --to torch --verify npu --out $(OUT) --publish

# Both cores (pytest-xdist); -v prints each test as it finishes, so a long run shows progress,
# and --durations names the slowest at the end.
test: $(STAMP)
	$(PY) -m pytest -n 2 -v --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check porter tests scripts

clean:
	rm -rf $(VENV) out .pytest_cache
