"""Hide TensorFlow's and TFLite's C++ chatter from command-line users.

The tensorflow wheel probes for CUDA on import and prints "Could not find cuda
drivers" to the process's stderr (file descriptor 2, so ``TF_CPP_MIN_LOG_LEVEL``
and Python-level redirection don't reach it). On a CPU-only laptop that line
is noise that looks like an error. We silence fd 2 during the *first* import
of tensorflow only, and replay what was hidden if that import fails; TFLite's
converter and interpreter are silenced around each call (``native_output_hidden``).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from typing import Iterator


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as hidden:
            os.dup2(hidden.fileno(), 2)
            try:
                self._loader.exec_module(module)
            except BaseException:
                os.dup2(saved, 2)
                hidden.seek(0)
                sys.stderr.buffer.write(hidden.read())
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import only; everything after is TensorFlow's own business
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def silence_tensorflow_startup() -> None:
    """Make the first ``import tensorflow`` in this process quiet on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


@contextlib.contextmanager
def native_output_hidden() -> Iterator[None]:
    """Hide what TFLite's C++ code prints to file descriptors 1 and 2 (``INFO: Created TensorFlow Lite
    XNNPACK delegate``, the quantiser's ``fully_quantize: 0, ...``): noise in a tool's output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as hidden:
        try:
            for fd in saved:
                os.dup2(hidden.fileno(), fd)
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
