"""``python -m retrain.options``: regenerate README's flags table and docs/flags.md."""
from .docs import main

main()
