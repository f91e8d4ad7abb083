"""`python -m scripts.evaluate` from a checkout, as TensorFlow-for-Poets ran it: see retrain.cli.evaluate."""
from retrain.cli.evaluate import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
