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
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	# These two declare dependencies porter does not use (torchvision; onnx<=1.17 and friends)
	# that would replace the pinned torch/onnx; install them alone. See README "Dependencies".
	$(PY) -m pip install -q --no-deps onnx2torch==1.5.15 paddle2onnx==2.1.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m porter fetch modnet_photographic
	$(PY) -m porter convert modnet_photographic --to torch --verify npu --out $(OUT) --publish

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check porter graphs tests scripts

clean:
	rm -rf $(VENV) out .pytest_cache
