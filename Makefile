# Two commands do all the set-up on a fresh machine (Python 3.11 and pip):
#   make example   install, then run the main job on the built-in example model and digits data
#   make test      install, then run ruff and the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := example-out
MODEL := models/mlp_digits.onnx
THETA := 0.95
TARGET_MACS := 0.5

.PHONY: install example test lint

install: $(VENV)/.installed

# torch is pinned to the CUDA-enabled build that lies on these machines' disk (it runs on the CPU);
# torchvision from the registry needs exactly this pair.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# profile -> slice -> restructure -> evaluate, on the example MLP with the bundled digits; then the same job in
# one call: prune to half the MACs with fine-tuning (exit code 3, which stops make, if the pruned model were
# more than 5% slower or 2 points less accurate than the original)
example: install
	mkdir -p $(OUT)
	$(BIN)/onnxslice profile $(MODEL) --data digits:train --metric taylor --metric avg -o $(OUT)/profile.npz
	$(BIN)/onnxslice slice $(MODEL) --profile $(OUT)/profile.npz --metric taylor --strategy semantic \
		--theta $(THETA) -o $(OUT)/slice.json
	$(BIN)/onnxslice restructure $(MODEL) --slice $(OUT)/slice.json -o $(OUT)/pruned.onnx
	$(BIN)/onnxslice evaluate $(OUT)/pruned.onnx --baseline $(MODEL) --data digits:test
	$(BIN)/onnxslice prune $(MODEL) --data digits:train --eval-data digits:test --target-macs $(TARGET_MACS) \
		-o $(OUT)/pruned-tuned.onnx

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q
