"""The memory cap of the subprocesses that read uploaded files (the checkpoint validator, the clean
check, the test-set reader).

Uploaded bytes are untrusted: a crafted header or archive can claim gigabytes. These processes cap
their own data segment (RLIMIT_DATA, which on Linux counts the heap and every private anonymous
mapping, so torch's tensors too) before they read a byte of the file, so an allocation past the
cap fails inside them as MemoryError or torch's "can't allocate memory" and becomes a one-line
refusal. The cap is set by the process itself, not by the API through preexec_fn (unsafe in a
threaded parent). RLIMIT_AS would not do: importing torch alone reserves ~3 GB of address space.
"""
from __future__ import annotations

import resource

MEMORY_ENV = "ROBAUDIT_VALIDATE_MEMORY_MB"


def limit_memory(megabytes: float | None) -> None:
    """Cap this process's data segment at ``megabytes`` (None: no cap)."""
    if megabytes is None or megabytes <= 0:
        return
    cap = int(megabytes * 1024 * 1024)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (Python's MemoryError, or torch's allocator)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "Cannot allocate memory" in str(exc)))


def over_cap_message(what: str, megabytes: float | None) -> str:
    return (f"{what} needed more memory than the {megabytes:g} MB allowed for checking an upload "
            f"({MEMORY_ENV}); if the file is a real model that large, raise the cap")
