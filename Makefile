# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_ENV := WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test test-all bench gpu-check install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build on these machines; a GPU user installs their CUDA build first.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m evals.lm_eval_plugin install  # `lm_eval --model recall-lm` (see evals/harness.py)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  # starts over: train.py refuses a fresh run into a folder that holds checkpoints
	rm -rf runs/quickstart
	$(PY) train.py

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q

test-all: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) -m evals.bench_kernels
	$(PY) -m evals.bench_swa
	$(PY) -m evals.throughput
	$(PY) -m evals.readme_perf  # the README's speed section, from the files just written

# On a machine with a CUDA device: every kernel test compiled for the GPU, then the CUDA benchmark rows,
# in a dated report under evals/results/gpu/ (sized to run twice in 15 minutes of device time).
gpu-check: $(STAMP)
	$(PY) -m evals.gpu_check

clean:
	rm -rf $(VENV) lightning_logs runs
