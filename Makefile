# ptune developer entry points. `make demo` and `make test` install first when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-full-scale demo paper pretrain-demo findings-models lint format bench gpu-check clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==23.2.1
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The suite runs on every core (pytest-xdist; each test module stays on one worker, so its
# compiled tiny models are shared, the slowest modules first: tests/conftest.py's
# SLOWEST_MODULES), one worker more than there are cores: a worker waiting on a `ptune`
# subprocess or on disk leaves its core to another (2 cores, 2026-12-06: 652 s with 2 workers,
# 581 s with 3); TEST_WORKERS=0 runs it in this process.
# The tests marked `full_scale` (the experiment files' plans at real T5 1.1 shapes on 8 and 16
# simulated devices and their one-step tiny runs, the GPU check's dry run, and the demo's two
# 300-step runs, which must learn: about 6 of the suite's summed minutes) run in
# `make test-full-scale`; CI (.ci/run) runs both targets.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(os.cpu_count() + 1)')
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
test: $(STAMP)
	$(PYTEST) -m "not full_scale" tests

test-full-scale: $(STAMP)
	$(PYTEST) -m full_scale tests

# The offline demo, on the embedded ptune_demo task and the small demo T5 whose pretrained
# weights ship in tasks/data/demo/model (see `pretrain-demo`): prompt tuning with the paper's
# recipe (class-label init, lr 0.3) over the frozen pretrained model; a second prompt
# (sampled-vocabulary init); the same prompt tuning over RANDOM frozen weights; model tuning
# of the pretrained model (the paper's baseline). Then it evaluates the first prompt, serves
# requests for both prompts in one mixed batch, ensembles the prompts, lists the first
# prompt's nearest tokens, and reports: a table of the runs, and plots in $(DEMO_DIR)/report.
DEMO_DIR ?= demo_run
DEMO_TASK := ptune_demo_rank_classification
DEMO_MODEL := tasks/data/demo/model
DEMO_TRAIN := $(BIN)/ptune train --gin_file=runs/demo.gin --gin.MIXTURE_OR_TASK_NAME="'$(DEMO_TASK)'"
demo_prompt = $(DEMO_DIR)/$(1)/numpy_checkpoints/best/encoder.prompt.prompt.npy

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(DEMO_TRAIN) --gin_file=prompts/class_labels.gin --gin.MODEL_DIR="'$(DEMO_DIR)/class_labels'"
	$(DEMO_TRAIN) --gin_file=prompts/sampled_vocab.gin --gin.MODEL_DIR="'$(DEMO_DIR)/sampled_vocab'"
	$(DEMO_TRAIN) --gin_file=prompts/class_labels.gin --gin.MODEL_DIR="'$(DEMO_DIR)/random_frozen'" \
	  --gin.INITIAL_CHECKPOINT_PATH=None --gin.trainer.TrainConfig.random_init=True
	$(DEMO_TRAIN) --gin_file=runs/demo_model_tuning.gin --gin.MODEL_DIR="'$(DEMO_DIR)/model_tuning'"
	$(BIN)/ptune eval --gin_file=runs/eval.gin --gin.MIXTURE_OR_TASK_NAME="'$(DEMO_TASK)'" \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(DEMO_MODEL)'" \
	  --gin.PROMPT_FILE="'$(call demo_prompt,class_labels)'"
	$(BIN)/ptune infer --gin_file=runs/infer.gin \
	  --gin.TASK_FEATURE_LENGTHS="{'inputs': 64, 'targets': 9}" \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(DEMO_MODEL)'" \
	  --gin.PROMPT_FILES="{'class_labels': '$(call demo_prompt,class_labels)', \
	    'sampled_vocab': '$(call demo_prompt,sampled_vocab)'}" \
	  --gin.INFER_INPUT_FILE="'tasks/data/demo/requests.jsonl'" \
	  --gin.INFER_OUTPUT_FILE="'$(DEMO_DIR)/predictions.jsonl'"
	$(BIN)/ptune ensemble --gin_file=runs/eval.gin --gin.MIXTURE_OR_TASK_NAME="'ptune_demo'" \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(DEMO_MODEL)'" --output=$(DEMO_DIR)/ensemble.json \
	  --prompt_files=$(call demo_prompt,class_labels),$(call demo_prompt,sampled_vocab)
	$(BIN)/ptune explain --prompt_file=$(call demo_prompt,class_labels) \
	  --checkpoint=$(DEMO_MODEL) --task=ptune_demo --top_k=3
	$(BIN)/ptune report $(DEMO_DIR)/class_labels $(DEMO_DIR)/sampled_vocab \
	  $(DEMO_DIR)/random_frozen $(DEMO_DIR)/model_tuning $(DEMO_DIR)/ensemble.json \
	  --output=$(DEMO_DIR)/report

# The paper's six findings at small scale (issue #33): every point of ptune/findings/design.py
# (prompt design, prompt and model tuning over the three shipped findings models, prompt
# lengths, initialisers, pretraining objectives, the shifted domain, ensembles), 3 seeds each,
# in one process; then $(PAPER_DIR)/report: findings.md and one PNG per finding. The last
# finished run waits in $(PAPER_DIR).previous until the new one finishes (a failed or
# interrupted run loses nothing; the next `make paper` replaces the partial one).
PAPER_DIR ?= paper_run

paper: $(STAMP)
	if [ -e $(PAPER_DIR).previous ]; then rm -rf $(PAPER_DIR); \
	elif [ -e $(PAPER_DIR) ]; then mv $(PAPER_DIR) $(PAPER_DIR).previous; fi
	$(BIN)/python -m ptune.findings --output=$(PAPER_DIR)
	rm -rf $(PAPER_DIR).previous

# The demo's pretrained model, remade from scratch (about 25 minutes on 2 CPU cores): writes
# the generated review corpus, pretrains the demo T5 on it with the prefix-LM objective
# (runs/pretrain_demo.gin) and replaces tasks/data/demo/model with the result.
PRETRAIN_DEMO_DIR ?= pretrain_demo_run

pretrain-demo: $(STAMP)
	rm -rf $(PRETRAIN_DEMO_DIR)
	mkdir -p $(PRETRAIN_DEMO_DIR)
	$(BIN)/python -c "from ptune.tasks import demo; demo.write_corpus('$(PRETRAIN_DEMO_DIR)/corpus.txt')"
	$(BIN)/ptune pretrain --gin_file=runs/pretrain_demo.gin --gin.MODEL_DIR="'$(PRETRAIN_DEMO_DIR)/run'" \
	  --corpus=ptune_demo_reviews:train=$(PRETRAIN_DEMO_DIR)/corpus.txt,objective=prefix_lm,vocabulary=byte
	rm -rf $(DEMO_MODEL)
	cp -r $(PRETRAIN_DEMO_DIR)/run/model $(DEMO_MODEL)

# The frozen models of the paper's findings at small scale (issue #33; 34 minutes on 2 CPU
# cores): the two-domain corpus (reviews and health care, `demo.corpus(domains=...)`), then
# models/findings_{small,medium,large}.gin (18,672 / 74,240 / 345,408 parameters) pretrained on
# it from random weights with the prefix-LM objective (runs/pretrain_findings.gin, 5,000 steps);
# findings_medium also with span corruption only, and that model LM-adapted (prefix LM,
# continued from it) for 500 and 2,000 steps. Each replaces tasks/data/findings/<name>.
FINDINGS_DIR ?= findings_models_run
FINDINGS_MODELS := tasks/data/findings
FINDINGS_NAMES := small medium large medium_span medium_span_lm500 medium_span_lm2000
findings_pretrain = $(BIN)/ptune pretrain --gin_file=runs/pretrain_findings.gin \
  --gin_file=models/findings_$(1).gin --gin.MODEL_DIR="'$(FINDINGS_DIR)/$(2)'" $(4) \
  --corpus=ptune_findings_corpus:train=$(FINDINGS_DIR)/corpus.txt,objective=$(3),vocabulary=byte

findings-models: $(STAMP)
	rm -rf $(FINDINGS_DIR)
	mkdir -p $(FINDINGS_DIR) $(FINDINGS_MODELS)
	$(BIN)/python -c "from ptune.tasks import demo; demo.write_corpus('$(FINDINGS_DIR)/corpus.txt', domains=(demo.REVIEWS, demo.CARE))"
	$(call findings_pretrain,small,small,prefix_lm)
	$(call findings_pretrain,medium,medium,prefix_lm)
	$(call findings_pretrain,large,large,prefix_lm)
	$(call findings_pretrain,medium,medium_span,span_corruption)
	$(call findings_pretrain,medium,medium_span_lm500,prefix_lm,--gin.TRAIN_STEPS=500 \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(FINDINGS_DIR)/medium_span/model'")
	$(call findings_pretrain,medium,medium_span_lm2000,prefix_lm,--gin.TRAIN_STEPS=2000 \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(FINDINGS_DIR)/medium_span/model'")
	for name in $(FINDINGS_NAMES); do rm -rf $(FINDINGS_MODELS)/$$name; \
	  cp -r $(FINDINGS_DIR)/$$name/model $(FINDINGS_MODELS)/$$name; done

lint: $(STAMP)
	$(BIN)/ruff check ptune tasks tests benchmarks
	$(BIN)/ruff format --check ptune tasks tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format ptune tasks tests benchmarks

# The benchmark has its own environment (ptune + CPU PyTorch, transformers, peft from the
# pinned [test] extra) so timing runs never disturb the test venv.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
BENCH_ARGS ?=

$(BENCH_STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip==23.2.1
	$(BENCH_VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benchmarks/causal_step.py

# Everything worth measuring on a GPU in one command (benchmarks/gpu_check.py), run with the
# GPU machine's own Python (JAX with CUDA; PyTorch, transformers and peft for the peer side);
# results in benchmarks/results/<date>-gpu-check/. `--dry_run` runs it tiny on a CPU.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
