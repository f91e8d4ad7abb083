"""`python -m scripts.label_image` from a checkout, as TensorFlow-for-Poets ran it: see retrain.cli.label_image."""
from retrain.cli.label_image import cli, main  # noqa: F401  (main: for callers that passed their own argv)

if __name__ == "__main__":
    cli()
