"""`python -m scripts.retrain` from a checkout, as TensorFlow-for-Poets ran it: see retrain.cli.retrain."""
from retrain.cli.retrain import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
