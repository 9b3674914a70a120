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

# Fetch the real MiniLM encoder and MR data (cached), fine-tune in FP32, evaluate dev and test.
demo: install
	$(PY) tools/fetch.py minilm mr
	$(PY) tools/train.py --config configs/mr_minilm_fp32.yaml --resume
	$(PY) tools/eval.py --config configs/mr_minilm_fp32.yaml --checkpoint runs/mr_minilm_fp32/checkpoints/best

clean:
	rm -rf $(VENV) runs
