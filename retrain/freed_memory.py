"""Give memory that Python and TensorFlow have freed back to the system before a stage that needs a lot.

glibc keeps freed blocks for reuse instead of returning them, so a large
temporary (an index's scratch arrays, the graph copies made while freezing an
export) still counts in the process's resident memory while the next stage
allocates its own on top: the peak is their sum, not the larger of the two.
"""
from __future__ import annotations

import ctypes


def return_freed_memory() -> None:
    """``malloc_trim(0)``: hand every free page back (glibc only; elsewhere nothing to do)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
