"""The C library through ctypes, loaded once with errno kept: for the runtime's namespaces and
mounts and the image store's openat2. Standard library only (the launcher imports it)."""

from __future__ import annotations

import ctypes


def _load() -> ctypes.CDLL:
    try:  # glibc's soname: loading it directly spares find_library's `ldconfig -p` (~40 ms)
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load()


def libc() -> ctypes.CDLL:
    """The C library, loaded once, with errno kept."""
    return _libc
