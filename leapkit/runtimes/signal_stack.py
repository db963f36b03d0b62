"""The calling thread's alternate signal stack, given back after OpenVINO's CPU plugin has replaced it."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator


class SignalStack(ctypes.Structure):
    """``stack_t`` of <signal.h>: an alternate signal stack."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library this process already has loaded (no ``find_library``, which runs ldconfig in a subprocess)."""
    return ctypes.CDLL(None)


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Give the calling thread back its alternate signal stack when the block ends (Linux; elsewhere a no-op).

    OpenVINO's CPU plugin sets an alternate signal stack of its own on the thread that compiles a model and
    unmaps it when the compiled model and its core are released, without handing the thread its old stack
    back. Python runs its signal handlers on the alternate stack (SA_ONSTACK), so a later signal delivered to
    that thread writes its frame into unmapped or reused memory: in one process that also spawns
    subprocesses (the test suite), that ended in a SIGSEGV raised by the kernel at a subprocess start.
    """
    libc = _libc() if sys.platform == "linux" else None
    before = SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)
