"""retrain: train a new softmax layer on top of a frozen ImageNet backbone, from Python or the command line.

    import retrain
    model = retrain.train("my_photos", how_many_training_steps=500)
    model.save("out/retrained_graph.pb")
    for p in retrain.load("out/retrained_graph.pb").predict(["photo.jpg"]):
        print(p.label, p.score)

The public names are loaded on first use (PEP 562), so ``import retrain`` is
cheap and does not import TensorFlow: the command-line tools silence
TensorFlow's start-up noise before its first import. The pipeline, one folder
a stage family, imports running only down this list:

    errors, files, quiet, metrics, ...   foundation
    data -> models -> cache -> training -> label -> export -> explain -> scale
    pipeline (the retrain job) -> api (these names) -> cli (the command-line tools)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import UserError

__version__ = "0.1.0"
__all__ = ["Model", "Prediction", "UserError", "__version__", "load", "relabel", "train", "undo"]

# Names served by retrain.api. None may be a subpackage's name too: ``retrain.<subpackage>`` is set as soon as
# that subpackage is imported, and would shadow the function.
_API_NAMES = frozenset(__all__) - {"UserError", "__version__"}

if TYPE_CHECKING:
    from .api import Model, Prediction, load, relabel, train, undo  # noqa: F401


def __getattr__(name: str) -> Any:
    """Load ``retrain.api`` (and so TensorFlow's importers) the first time one of its names is used."""
    if name not in _API_NAMES:
        raise AttributeError(f"module 'retrain' has no attribute {name!r}")
    from . import api
    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
