# The two set-up commands of the README (and make lint). Both work offline given the package
# registries: the default backbone and example photos are in this repository. Every command runs
# through $(PYTHON), so `make test PYTHON=venv/bin/python` installs into and tests that virtualenv.
PYTHON ?= python3
DEMO_OUT ?= /tmp/retrain_demo

.PHONY: install demo test lint

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,beam,onnx]'

demo: install
	$(PYTHON) -m scripts.retrain --image_dir examples/flower_photos \
	    --output_graph $(DEMO_OUT)/retrained_graph.pb --output_labels $(DEMO_OUT)/retrained_labels.txt \
	    --summaries_dir $(DEMO_OUT)/logs --how_many_training_steps 500 --random_seed 0
	$(PYTHON) -m scripts.label_image --graph $(DEMO_OUT)/retrained_graph.pb \
	    --image examples/flower_photos/roses/$$(ls examples/flower_photos/roses | head -n 1)

# Two workers, a test file each at a time: a file's module fixtures (a retrained model, a built backbone) are made
# once, and the single-threaded stretches of two files (graph building, decoding) overlap on the two cores.
test: install
	$(PYTHON) -m pytest -q -n auto --dist loadfile

lint: install
	$(PYTHON) -m ruff check .
