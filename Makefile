# fedlab: `make help` lists the targets. The environment lives in .venv (uv's default).
.DEFAULT_GOAL := help
SHELL := /bin/bash

# uv installs the locked environment; it is bootstrapped with pip when missing. --compile-bytecode: with
# PYTHONDONTWRITEBYTECODE set (as on these machines) nothing is ever cached, and every start would compile
# TensorFlow's and Hydra's sources again (measured: `import tensorflow_federated` 21 s -> 7 s, `--help` 2.4 -> 1.3 s).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV := .venv
FEDLAB := $(VENV)/bin/fedlab
PYTEST := $(VENV)/bin/pytest

.PHONY: help install run test test-slow test-all lock wheel-check clean compare compare-algorithms compare-stateful compare-systems traces report bench bench-accuracy tensorboard privacy per-client mlflow reproduce

help:  ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Optional extras (pyproject.toml): `make install EXTRAS=ray` adds the Ray launcher. The choice is remembered in
# .venv/.installed, so later targets keep it; `make install EXTRAS=` goes back to the default environment.
INSTALLED_EXTRAS := $(shell cat $(VENV)/.installed 2>/dev/null)
EXTRAS ?= $(INSTALLED_EXTRAS)
ifneq ($(strip $(EXTRAS)),$(strip $(INSTALLED_EXTRAS)))
.PHONY: $(VENV)/.installed  # other extras than installed: sync again
endif

$(VENV)/.installed: pyproject.toml uv.lock Makefile
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --extra test $(addprefix --extra ,$(EXTRAS)) --compile-bytecode
	@echo '$(strip $(EXTRAS))' > $@

install: $(VENV)/.installed  ## Create .venv from uv.lock with fedlab (editable); EXTRAS=ray adds the Ray launcher

run: install  ## Train with the defaults on the embedded digits data (offline, ~40 s)
	$(FEDLAB) $(ARGS)

test: install  ## Run the default test suite (a few minutes)
	$(PYTEST) -q

test-slow: install  ## Run only the long end-to-end tests
	$(PYTEST) -q -m slow

test-all: install  ## Run every test, slow ones included
	$(PYTEST) -q -m 'slow or not slow'

# The seed's comparison (conf/experiment/compare.yaml): fedavg_cnn and simple_cnn x mean and compression,
# federated, then each model's centralized baseline, all in one sweep directory, then the report.
COMPARE_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
COMPARE_DIR ?= multirun/compare_$(COMPARE_STAMP)
compare: install  ## The seed's comparison on digits: 4 federated runs + 2 centralized, then report.md (~20 min)
	$(FEDLAB) -m experiment=compare hydra.sweep.dir=$(COMPARE_DIR) $(ARGS)
	$(FEDLAB) -m experiment=compare task=centralized aggregator=mean hydra.sweep.dir=$(COMPARE_DIR) $(ARGS)
	$(VENV)/bin/fedlab-report $(COMPARE_DIR) --target 0.8

# Issue 11's comparison (docs/algorithms.md): six methods' presets x 3 seeds on the LEAF sample's digits, plus the
# centralized baseline of the same model, all in one sweep directory, then the report (mean +- std over seeds).
LEAF ?= ../shared/data/femnist_leaf_sample
ALGORITHMS_DIR ?= multirun/compare_algorithms_$(COMPARE_STAMP)
ALGORITHMS_SETTING = data=leaf data.path=$(LEAF) data.digits_only=true model=simple_cnn rounds=150 eval_every=10 \
	checkpoint_every=0 'hydra.job.config.override_dirname.exclude_keys=[data.path]'
compare-algorithms: install  ## fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox x 3 seeds on LEAF digits, then the report
	$(FEDLAB) -m experiment=fedavg,fedavgm,fedadam,fedyogi,fedadagrad,fedprox seed=0,1,2 $(ALGORITHMS_SETTING) \
		hydra.sweep.dir=$(ALGORITHMS_DIR) $(ARGS)
	$(FEDLAB) task=centralized experiment=fedavg $(ALGORITHMS_SETTING) hydra.run.dir=$(ALGORITHMS_DIR)/centralized $(ARGS)
	$(VENV)/bin/fedlab-report $(ALGORITHMS_DIR) --target 0.9

# Differential privacy on the LEAF sample (conf/experiment/privacy.yaml): DP-FedAvg with adaptive clipping at noise
# multipliers 0, 0.3, 0.5 and 1.0, 3 seeds each, then the report: accuracy against epsilon (docs/privacy.md).
PRIVACY_DIR ?= multirun/privacy_$(COMPARE_STAMP)
privacy: install  ## DP on the LEAF sample: z = 0, 0.3, 0.5, 1.0 x 3 seeds, accuracy vs epsilon (~45 min)
	$(FEDLAB) -m experiment=privacy hydra.sweep.dir=$(PRIVACY_DIR) $(ARGS)
	$(VENV)/bin/fedlab-report $(PRIVACY_DIR)

# Issue 22's comparison (docs/algorithms.md): fedavg, fedprox, scaffold, feddyn, fednova x 3 seeds on the
# embedded digits dealt two classes per client (data.partition=shards) and on the LEAF sample's digits; a report each.
STATEFUL_DIR ?= multirun/compare_stateful_$(COMPARE_STAMP)
STATEFUL_SWEEP = -m algorithm=fedavg,fedprox,scaffold,feddyn,fednova seed=0,1,2 sampling=uniform eval_every=10 \
	checkpoint_every=0
compare-stateful: install  ## fedavg, fedprox, scaffold, feddyn, fednova x 3 seeds on digits (2 classes/client) and LEAF digits (~15 min)
	$(FEDLAB) $(STATEFUL_SWEEP) data.partition=shards rounds=100 target_accuracy=0.8 \
		hydra.sweep.dir=$(STATEFUL_DIR)/digits_shards $(ARGS)
	$(VENV)/bin/fedlab-report $(STATEFUL_DIR)/digits_shards
	$(FEDLAB) $(STATEFUL_SWEEP) data=leaf data.path=$(LEAF) data.digits_only=true model=simple_cnn rounds=50 \
		target_accuracy=0.85 'hydra.job.config.override_dirname.exclude_keys=[data.path]' \
		hydra.sweep.dir=$(STATEFUL_DIR)/leaf_digits $(ARGS)
	$(VENV)/bin/fedlab-report $(STATEFUL_DIR)/leaf_digits

# Issue 23's comparison (docs/heterogeneity.md): the LEAF sample's digits on devices of a 10x speed spread
# (conf/system/traces/leaf_sample_digits_10x.csv): synchronous FedAvg, with a deadline, with 30% over-selection, with
# both, FedAvg and FedNova with the deadline and partial work, and FedBuff (20 training at once, every 10 updates
# applied); 3 seeds each, one report (accuracy against simulated time and uplink).
SYSTEMS_DIR ?= multirun/compare_systems_$(COMPARE_STAMP)
SYSTEMS_DEADLINE ?= 20
SYSTEMS_SETTING = system=trace system.path=traces/leaf_sample_digits_10x.csv seed=0,1,2 data=leaf data.path=$(LEAF) \
	data.digits_only=true model=simple_cnn sampling=uniform rounds=50 checkpoint_every=0 \
	'hydra.job.config.override_dirname.exclude_keys=[data.path,system.path]' hydra.sweep.dir=$(SYSTEMS_DIR)
compare-systems: install  ## Sync, deadline, over-selection, partial work, FedBuff on a 10x device trace x 3 seeds (~15 min)
	$(FEDLAB) -m $(SYSTEMS_SETTING) 'system.deadline_s=null,$(SYSTEMS_DEADLINE)' system.over_selection=0,0.3 $(ARGS)
	$(FEDLAB) -m $(SYSTEMS_SETTING) algorithm=fedavg,fednova system.deadline_s=$(SYSTEMS_DEADLINE) \
		system.partial_work=true $(ARGS)
	$(FEDLAB) -m $(SYSTEMS_SETTING) algorithm=fedbuff $(ARGS)
	$(VENV)/bin/fedlab-report $(SYSTEMS_DIR)

traces: install  ## Rewrite the example device traces in conf/system/traces/ (from the LEAF sample's writer ids)
	$(VENV)/bin/python -m fedlab.heterogeneity.example_traces $(LEAF) conf/system/traces

# Issue 21's table (docs/evaluation.md): per-client accuracy, participation gap, fine-tuned vs local-only
# personalization and the cost to 80% on the LEAF sample's digits, 3 seeds each, then the report.
PER_CLIENT_DIR ?= multirun/per_client_$(COMPARE_STAMP)
per-client: install  ## Per-client distribution, participation gap, finetune vs local_only, rounds to 80% (LEAF digits, 3 seeds, ~5 min)
	$(FEDLAB) -m experiment=per_client hydra.sweep.dir=$(PER_CLIENT_DIR) $(ARGS)
	$(VENV)/bin/fedlab-report $(PER_CLIENT_DIR)

# Reddi et al. 2021's EMNIST CR presets (conf/experiment/fed*.yaml): one preset x 3 seeds with the paper's CNN and
# 62 classes, on TFF's EMNIST when its database is cached (~/.tff/emnist_all.sqlite), else on the LEAF sample (never
# downloaded), then the measured accuracy (mean +- std over seeds) beside the figure the preset's header states.
# Fewer rounds for a quick look: make reproduce PRESET=fedavg ARGS=rounds=20 (the printout says how many ran).
PRESET ?= fedavg
REPRODUCE_DIR ?= multirun/reproduce_$(PRESET)_$(COMPARE_STAMP)
reproduce: install  ## A Reddi et al. preset x 3 seeds (EMNIST if cached, else the LEAF sample) vs the paper: make reproduce PRESET=fedadam
	data="$$($(VENV)/bin/python -m fedlab.reporting.reproduce data $(LEAF))" && echo "reproduce: data $$data" && \
	$(FEDLAB) -m experiment=$(PRESET) seed=0,1,2 model=fedavg_cnn rounds=1500 eval_every=100 checkpoint_every=0 \
		$$data 'hydra.job.config.override_dirname.exclude_keys=[data.path]' hydra.sweep.dir=$(REPRODUCE_DIR) $(ARGS)
	$(VENV)/bin/python -m fedlab.reporting.reproduce report $(REPRODUCE_DIR) $(PRESET)

# TensorBoard without its start-up noise: TensorFlow's CUDA/TensorRT lines (TF_CPP_MIN_LOG_LEVEL) and
# pkg_resources' deprecation (PYTHONWARNINGS). LOGDIR=<dir> serves one directory instead of runs/ and multirun/, with
# the loader the two use (--load_fast=false: no advisory note about TensorBoard's experimental data server).
TB_PORT ?= 6006
LOGDIR ?=
TB_LOGDIR = $(if $(LOGDIR),--logdir $(LOGDIR) --load_fast=false,--logdir_spec runs:runs,multirun:multirun)
tensorboard: install  ## Serve the curves of runs/ and multirun/ at http://localhost:6006 (TB_PORT=..., LOGDIR=<one dir>)
	@mkdir -p runs multirun
	TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore::UserWarning \
		$(VENV)/bin/tensorboard $(TB_LOGDIR) --port $(TB_PORT)

# tracker=mlflow's default store (docs/trackers.md): mlruns/mlflow.db beside runs/ and multirun/, artifacts beside it.
MLFLOW_PORT ?= 5000
mlflow: install  ## Serve the MLflow UI over mlruns/ (tracker=mlflow's runs and sweeps) at http://localhost:5000
	@mkdir -p mlruns/artifacts
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

report: install  ## Compare the runs of a sweep: make report SWEEP=multirun/<dir> (writes report.md there)
	$(VENV)/bin/fedlab-report $(SWEEP) $(REPORT_ARGS)

lock:  ## Re-resolve uv.lock after changing dependencies
	$(UV) lock

wheel-check: install  ## Build the wheel and run `fedlab --help` from it in a throwaway venv
	rm -rf dist /tmp/fedlab-wheel-venv
	$(UV) build --wheel --out-dir dist
	$(UV) venv --quiet /tmp/fedlab-wheel-venv
	VIRTUAL_ENV=/tmp/fedlab-wheel-venv $(UV) pip install --quiet --no-deps dist/*.whl
	VIRTUAL_ENV=/tmp/fedlab-wheel-venv $(UV) pip install --quiet 'hydra-core>=1.3,<1.4'
	cd /tmp && /tmp/fedlab-wheel-venv/bin/fedlab --help | grep -q 'model: cifar_cnn, custom, fedavg_cnn, linear, simple_cnn'
	cd /tmp && /tmp/fedlab-wheel-venv/bin/fedlab --cfg job model=fedavg_cnn | grep -q 'architecture: fedavg_cnn'
	$(VENV)/bin/python -c "import glob, zipfile; assert 'fedlab/conf/system/traces/digits_10x.csv' in \
		zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist(), 'the example device traces are not in the wheel'"
	@echo "wheel OK: configs ship inside the package"

bench: install  ## Print performance figures beside their goals (~15 min; BENCH_QUICK=1 ~5 min); ARGS=scale: full-size federations (~45 min, ~5 GB of temp disk; BENCH_QUICK=1 ~15 min); ARGS=remote_tls: runtime=remote direct vs proxy vs mutual TLS, ms per round (~5 min)
	$(VENV)/bin/python -m bench $(ARGS)

bench-accuracy: install  ## Time to accuracy of fedavg_cnn on the LEAF writers vs centralized (long)
	$(VENV)/bin/python -m bench accuracy

clean:  ## Remove build outputs (keeps runs/ and multirun/)
	rm -rf dist build *.egg-info .pytest_cache
