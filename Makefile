# ptune developer entry points. `make demo` and `make test` install first when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo lint format bench clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==23.2.1
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The suite runs on every core (pytest-xdist; each test module stays on one worker, so its
# compiled tiny models are shared); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests

# The offline demo: train a prompt on the embedded ptune_demo task over a small random T5
# (runs/demo.gin names its model), evaluate the best prompt, serve a few requests with it,
# list its nearest tokens and plot the run. Eval and infer read the model's configuration from
# the run's random_init checkpoint: no model file needed.
DEMO_DIR ?= demo_run
DEMO_TASK := ptune_demo_rank_classification
DEMO_PROMPT := $(DEMO_DIR)/numpy_checkpoints/best/encoder.prompt.prompt.npy

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/ptune train --gin_file=prompts/class_labels.gin --gin_file=runs/demo.gin \
	  --gin.MODEL_DIR="'$(DEMO_DIR)'" --gin.MIXTURE_OR_TASK_NAME="'$(DEMO_TASK)'"
	$(BIN)/ptune eval --gin_file=runs/eval.gin --gin.MIXTURE_OR_TASK_NAME="'$(DEMO_TASK)'" \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(DEMO_DIR)/random_init'" --gin.PROMPT_FILE="'$(DEMO_PROMPT)'"
	$(BIN)/ptune infer --gin_file=runs/infer.gin \
	  --gin.TASK_FEATURE_LENGTHS="{'inputs': 64, 'targets': 9}" \
	  --gin.INITIAL_CHECKPOINT_PATH="'$(DEMO_DIR)/random_init'" \
	  --gin.PROMPT_FILES="{'ptune_demo': '$(DEMO_PROMPT)'}" \
	  --gin.INFER_INPUT_FILE="'tasks/data/demo/requests.jsonl'" \
	  --gin.INFER_OUTPUT_FILE="'$(DEMO_DIR)/predictions.jsonl'"
	$(BIN)/ptune explain --prompt_file=$(DEMO_PROMPT) --checkpoint=$(DEMO_DIR)/random_init \
	  --task=ptune_demo --top_k=3
	$(BIN)/ptune report $(DEMO_DIR)

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

clean:
	rm -rf $(VENV) build dist *.egg-info
