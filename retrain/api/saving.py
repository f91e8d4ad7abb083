"""``Model.save``: a model's file copied with its labels file and sidecar beside it, as retrain writes them."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from ..errors import UserError, option_name
from ..export.frozen_graph import saved_model_folder, write_labels
from ..files import atomic_write
from ..graph_contract import Sidecar, sidecar_path
from ..models.model_file import SAVED_MODEL


def check_path(value: object, keyword: str) -> str | os.PathLike:
    """A path argument, checked.

    Args:
        value: what the caller passed.
        keyword: the argument's name, for the message.

    Returns:
        ``value``, when it is a non-empty string or path-like object.

    Raises:
        UserError: it is not.
    """
    if isinstance(value, (str, os.PathLike)) and str(value):
        return value
    raise UserError(f"{option_name(keyword)} must be a path (a string or pathlib.Path), got {value!r}")


def save_model(source: Path, model_format: str, config: Sidecar, labels: list[str], path: str | os.PathLike,
               labels_path: str | os.PathLike | None = None) -> list[Path]:
    """Copy the model at ``source`` to ``path``, and write its labels file and sidecar beside the copy.

    Args:
        source: the model file or SavedModel folder being copied.
        model_format: its format (``model_file.SAVED_MODEL`` is a folder, every other format one file).
        config: how the model is fed (the sidecar's fields); written with ``labels`` as the copy's sidecar.
        labels: the labels, in output order.
        path: where the copy goes.
        labels_path: where the labels file goes; default ``path`` with the suffix ``.txt``.

    Returns:
        The copy's path, the labels file's and the sidecar's.

    Raises:
        UserError: ``path`` is ``source``, would be overwritten by the labels file or sidecar, or cannot be
            written.
    """
    target = Path(check_path(path, "path"))
    labels_target = target.with_suffix(".txt") if labels_path is None else Path(check_path(labels_path, "labels_path"))
    if target.exists() and os.path.samefile(target, source):
        raise UserError(f"{option_name('path')} {path} is the file this model was loaded from; "
                        f"save the copy somewhere else")
    if target in (labels_target, sidecar_path(target)):
        raise UserError(f"{option_name('path')} {path} is where its labels file or sidecar would go; "
                        f"name the model .pb, .tflite or a SavedModel folder")
    if model_format == SAVED_MODEL:
        with saved_model_folder(target) as staging:
            shutil.copytree(source, staging, dirs_exist_ok=True)
    else:
        with open(source, "rb") as original, atomic_write(target) as copy:
            shutil.copyfileobj(original, copy)
    write_labels(labels, labels_target)
    sidecar = dataclasses.replace(config, labels=list(labels)).write(target)
    return [target, labels_target, sidecar]
