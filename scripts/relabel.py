"""`python -m scripts.relabel` from a checkout, as TensorFlow-for-Poets ran it: see retrain.cli.relabel."""
from retrain.cli.relabel import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
