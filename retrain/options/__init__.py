"""Every option of every tool, declared once: name, default, help, --help section and the tools that take it.

argparse (``retrain.cli.common.add_options``), the Python API's keyword arguments (``retrain.job_options
.retrain_options``), the library's dataclass defaults (``default``) and the flags documentation
(``python -m retrain.options``) all read this table. It sits just above ``errors``, ``files`` and
``graph_contract`` and below everything else.
"""
from __future__ import annotations

from .option import TOOLS, Option
from .table import OPTIONS, default, find, options_of
from .training import DISTORTION_FLAG_COPIES, FINE_TUNE_STEPS
from .values import build, checked_values

__all__ = ["DISTORTION_FLAG_COPIES", "FINE_TUNE_STEPS", "OPTIONS", "TOOLS", "Option", "build", "checked_values",
           "default", "find", "options_of"]
