# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PEERS  := .venv-peers
FLOOR  := .venv-floor
OUT    ?= runs/demo
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-floor test-isa test-emulated-cpu venv peers data benchmark ladder clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -e '.[tensorboard]'
	touch $@

venv: $(VENV)/.installed

# Keras 3 / TensorFlow, PyTorch and Keras-on-JAX for the benchmark's peers, in their own venv.
$(PEERS)/.installed: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	touch $@

peers: $(PEERS)/.installed

# Debian's dataset-fashion-mnist puts the official IDX files in $(FMNIST); needs root and apt.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST found in $(FMNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; \
	else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir (see README)"; fi

# The chapter's experiments on the full data, then the evaluation in nats: figures + metrics.json under $(OUT).
# --overwrite: a second `make demo` replaces the first one's runs (each run owns its folder).
demo: venv data
	$(PY) -m experiments.linear_ae_pca --overwrite --out $(OUT)/linear_ae_pca
	$(PY) -m experiments.vae_fashion_mnist --recipe chapter --overwrite --out $(OUT)/vae_chapter
	$(PY) -m experiments.vae_fashion_mnist --recipe improved --overwrite --out $(OUT)/vae_improved
	$(PY) -m experiments.evaluate_vae --params $(OUT)/vae_chapter/params.msgpack --overwrite --out $(OUT)/vae_chapter_eval

# The suite in TEST_WORKERS processes (pytest-xdist): much of it is compiling and starting
# subprocesses, single-threaded work that two workers overlap on two cores.
TEST_WORKERS ?= 2

test: venv peers
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The same suite on the oldest versions the requirements allow (requirements-floor.txt).
$(FLOOR)/.installed: requirements-floor.txt pyproject.toml
	$(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q --upgrade pip
	$(FLOOR)/bin/python -m pip install -q -r requirements-floor.txt
	$(FLOOR)/bin/python -m pip install -q --no-deps -e .
	touch $@

test-floor: $(FLOOR)/.installed peers
	$(FLOOR)/bin/python -m pytest -q -n $(TEST_WORKERS)

# The reproducibility tests on the code users run (docs/reproducibility.md): XLA's default
# optimisation level and aejax's vector width, where `make test` compiles for compile time
# (tests/conftest.py). test-isa: on this CPU, then with XLA's code generation limited to AVX and to
# SSE4.2 (no FMA: other roundings in aejax's compiled kernels). test-emulated-cpu: the tests that
# compare two programs, on an emulated AVX2 CPU without AVX-512 (qemu-user's EPYC-Rome model:
# library kernels that pick their code by CPUID run as there too); about 11 minutes (2026-12-06); installs
# Debian's qemu-user when root.
REPRODUCIBILITY_TESTS := tests/test_fit.py tests/test_parallel.py tests/test_resilience.py
PRODUCTION_XLA_FLAGS := --xla_backend_optimization_level=3 --xla_cpu_prefer_vector_width=512
EMULATED_CPU := qemu-x86_64 -cpu EPYC-Rome

test-isa: venv
	@for isa in native AVX SSE4_2; do echo "--- XLA code generation for $$isa"; \
	  limit=$$([ $$isa = native ] || echo --xla_cpu_max_isa=$$isa); \
	  XLA_FLAGS="$(PRODUCTION_XLA_FLAGS) $$limit" $(PY) -m pytest -q -n $(TEST_WORKERS) $(REPRODUCIBILITY_TESTS) || exit 1; done

test-emulated-cpu: venv
	@command -v qemu-x86_64 >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q qemu-user || { apt-get update -q && apt-get install -y -q qemu-user; }; }; } || \
	  { echo "test-emulated-cpu needs qemu-x86_64: run 'sudo apt-get install qemu-user'"; exit 1; }
	XLA_FLAGS="$(PRODUCTION_XLA_FLAGS)" AEJAX_TEST_EMULATOR="$(EMULATED_CPU)" $(EMULATED_CPU) $(PY) -m pytest -q -p no:cacheprovider \
	  -m across_programs $(REPRODUCIBILITY_TESTS) 2>&1 | grep -v "TCG doesn't support"; exit $${PIPESTATUS[0]}

benchmark: venv peers
	$(PY) -m benchmarks.throughput --peer-python $(PEERS)/bin/python --json $(OUT)/benchmarks.json
	$(PY) -m benchmarks.throughput --model conv --batch-sizes 128 --population-sizes 1,4 --num-examples 11000 \
	  --peer-python $(PEERS)/bin/python --json $(OUT)/benchmarks_conv.json

# The VAE ladder (docs/ladder.md): each rung on the literature protocol, trained to its end, then
# evaluated (IWAE k = 5,000, diagnostics, sample quality in the in-project classifier's features);
# then the ladder's table and figures (against the published values, what each change bought,
# validation by epoch) in $(LADDER)/report.
# Days on 2 CPU cores, hours on a GPU. A training or an evaluation that stops continues where it
# stopped when `make ladder` runs again (--auto-resume); a finished rung is not trained again. A rung
# trained further after its evaluation is not evaluated over the old one: remove RUNG_eval first.
# `make ladder RUNGS="hvae hvae_vamp" SEEDS=3`: some rungs, each a population of 3 seeds.
LADDER     ?= runs/ladder
CLASSIFIER ?= runs/classifier/classifier.msgpack
SEEDS      ?= 1
LADDER_RUNGS := mlp mlp_vamp hvae hvae_vamp mlp_iwae hvae_vamp_iwae conv conv_hvae conv_hvae_vamp
RUNGS      ?= $(LADDER_RUNGS)
rung_mlp            :=
rung_mlp_vamp       := --prior vamp
rung_hvae           := --model hvae
rung_hvae_vamp      := --model hvae --prior vamp
rung_mlp_iwae       := --objective iwae --train-samples 5
rung_hvae_vamp_iwae := --model hvae --prior vamp --objective iwae --train-samples 5
rung_conv           := --model conv
rung_conv_hvae      := --model conv_hvae
rung_conv_hvae_vamp := --model conv_hvae --prior vamp

ladder: venv data $(RUNGS:%=$(LADDER)/%_eval/metrics.json)
	$(PY) -m experiments.ladder_report --ladder $(LADDER) --overwrite --out $(LADDER)/report

# Kept: make would otherwise delete a rung's params as an intermediate file once it is evaluated.
.PRECIOUS: $(LADDER)/%/params.msgpack $(CLASSIFIER)

$(LADDER)/%/params.msgpack:
	@[ -n "$(filter $*,$(LADDER_RUNGS))" ] || { echo "make ladder: RUNGS has '$*'; the rungs: $(LADDER_RUNGS)" >&2; exit 2; }
	$(PY) -m experiments.vae_fashion_mnist --preset literature $(rung_$*) --num-seeds $(SEEDS) --auto-resume --out $(@D)

$(LADDER)/%_eval/metrics.json: $(LADDER)/%/params.msgpack $(CLASSIFIER)
	$(PY) -m experiments.evaluate_vae --params $< --classifier $(CLASSIFIER) --auto-resume --out $(@D)

$(CLASSIFIER):
	$(PY) -m experiments.train_classifier --overwrite --out $(@D)

clean:
	rm -rf $(VENV) $(PEERS) $(FLOOR) runs
