"""The Python API, what ``import retrain`` offers: train, load, relabel, undo, Model and Prediction.

The top of the stack below the command-line tools, and as thin as they are:
every call runs the library's own code (``pipeline.run_retrain``,
``label.labeler.GraphLabeler``, ``label.evaluation``, ``label.relabel``), so a
notebook and a shell get the same checks, files and answers.

    model.py   Model (predict, evaluate, save), Prediction, load
    saving.py  Model.save: the model's file, labels file and sidecar, each written atomically
    jobs.py    train, relabel, undo
"""
from ..quiet import silence_tensorflow_startup

silence_tensorflow_startup()  # before anything below imports TensorFlow, as the command-line tools do

from .jobs import relabel, train, undo  # noqa: E402
from .model import Model, Prediction, load  # noqa: E402

__all__ = ["Model", "Prediction", "load", "relabel", "train", "undo"]
