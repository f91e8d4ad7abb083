"""`python -m scripts.visualize_filters` from a checkout, as TensorFlow-for-Poets ran it.

See retrain.cli.visualize_filters.
"""
from retrain.cli.visualize_filters import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
