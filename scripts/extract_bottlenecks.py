"""`python -m scripts.extract_bottlenecks` from a checkout, as TensorFlow-for-Poets ran it.

See retrain.cli.extract_bottlenecks.
"""
from retrain.cli.extract_bottlenecks import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
