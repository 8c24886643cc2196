"""Small numba kernels of the VO core (the Hamming matcher, the pose refinement's normal equations), compiled on
first use with numba's disk cache (later processes load them in well under a second). Each has a numpy or OpenCV
path beside it: without numba, or when compiling fails, ``compiled`` returns None once with one warning and the
caller takes that path. (The ALIKED network's kernels are generated per channel count instead:
``aliked_ros.features.cpu_kernels``.)"""
from __future__ import annotations

import logging
from typing import Any, Callable

LOG = logging.getLogger(__name__)

_compiled: dict[Callable, Any] = {}  # python function -> its compiled kernel, or False (unavailable; tests set it)


def compiled(function: Callable, example_args: tuple, fallback: str, fastmath: bool = False) -> Callable | None:
    """``function`` compiled by numba (nogil: the caller's other threads run beside it) and run once on
    ``example_args`` (numba compiles on the first call: a failure shows here, not on a frame); None without numba
    or after a failure, logged once as "... unavailable: ``fallback``"."""
    kernel = _compiled.get(function)
    if kernel is None:
        _compiled[function] = False
        try:
            import numba

            candidate = numba.njit(fastmath=fastmath, nogil=True, boundscheck=False, cache=True)(function)
            candidate(*example_args)
            _compiled[function] = kernel = candidate
        except Exception as error:  # ImportError (no numba), a compiler failure
            LOG.warning("the %s kernel is unavailable (%s: %s): %s", function.__name__, type(error).__name__, error,
                        fallback)
            kernel = False
    return kernel or None

