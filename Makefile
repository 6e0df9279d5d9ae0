# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both install exactly requirements.lock into .venv (`make lock` regenerates it; `make test-latest` is the
# newest-versions canary). The code is the package recall_lm, installed editable from this clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -qq
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# Installed only when missing, at the lock's versions, so that a GPU user's own CUDA build is kept
# (torch==2.13.0 is the CPU build on these machines; the newest torch on the registry is a CUDA build).
TORCH_LIKE := ^(torch|triton|nvidia-[a-z0-9-]+)==
TEST_ENV := WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test test-all test-latest lint lock bench gpu-check install clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $$(grep -E '^torch==' $(LOCK))
	$(PY) -c "import triton" 2>/dev/null || $(PIP) install $$(grep -E '^triton==' $(LOCK))
	grep -vE '$(TORCH_LIKE)' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(PIP) install -r $(VENV)/lock-without-torch.txt
	$(PIP) install --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  # starts over: train.py refuses a fresh run into a folder that holds checkpoints
	rm -rf runs/quickstart
	$(PY) train.py

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	$(TEST_ENV) $(PY) -m pytest -q --durations=25

test-all: lint
	$(TEST_ENV) $(PY) -m pytest -q --durations=25 -m "slow or not slow"

# The lock: the newest versions pyproject.toml allows, resolved by pip (with this machine's pip
# configuration) in a fresh venv; torch stays the CPU build. Run `make test` on it before committing.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip -qq install torch==2.13.0
	.venv-lock/bin/python -m pip -qq install -e ".[dev]"
	(echo "# Exact versions installed by \`make install\` (\`make lock\` regenerates this file, $$(date -u +%F))."; \
	 echo "# torch, triton and nvidia-* are installed only when missing (see the Makefile)."; \
	 .venv-lock/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f) > $(LOCK)
	rm -rf .venv-lock

# The newest-versions canary: a separate venv with the newest versions pyproject.toml allows (torch and
# triton pinned to the lock's CPU build), the default suite, and its result in evals/results/canary.md.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip -qq install --upgrade pip
	grep -E '^(torch|triton)==' $(LOCK) > .venv-latest/pins.txt
	.venv-latest/bin/python -m pip -qq install -r .venv-latest/pins.txt
	.venv-latest/bin/python -m pip -qq install --upgrade --upgrade-strategy eager -c .venv-latest/pins.txt -e ".[dev]"
	$(TEST_ENV) .venv-latest/bin/python -m recall_lm.evals.tools.canary

bench: $(STAMP)
	$(PY) -m recall_lm.evals.bench.kernels
	$(PY) -m recall_lm.evals.bench.swa
	$(PY) -m recall_lm.evals.bench.throughput
	$(PY) -m recall_lm.evals.bench.readme_perf  # the README's speed section, from the files just written

# On a machine with a CUDA device: every kernel test compiled for the GPU, then the CUDA benchmark rows,
# in a dated report under evals/results/gpu/ (sized to run twice in 15 minutes of device time).
gpu-check: $(STAMP)
	$(PY) -m recall_lm.evals.bench.gpu_check

clean:
	rm -rf $(VENV) .venv-latest .venv-lock lightning_logs runs *.egg-info
