"""Keeping mediapipe off the network: users' footage is private, and the extension declares file access only.

mediapipe's Tasks library (1.2.3: libmediapipe.so / .dll / .dylib) builds a usage-stats logger for every task
and POSTs to the compiled-in `https://play.googleapis.com/log` 60 s after a task is created and when it is
closed. No option, flag or environment variable turns it off (its logger factory always builds the HTTP
client; the legacy face mesh of 0.10.21 had none). The URL is read from the library's constant data at each
post, so the same-length `xttps://...` in its place makes the HTTP client fail on the scheme before any DNS
lookup, after which it stays in its error state and never tries again. Two ways to put it there:
- on disk, in the library file (`neutralise_file`): build.py does this to the wheels the extension ships
  (Linux and Windows; a macOS dylib is code-signed, so a changed file would no longer load);
- in memory, in this process (`ensure_offline`, Linux): for a library installed by pip (a checkout's .venv,
  a user's own Python), before the first landmarker is made. Each process makes its own.
`ensure_offline` refuses to let tracking start when neither holds.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

TELEMETRY_URL = b"https://play.googleapis.com/log\x00"
DEAD_URL = b"xttps://play.googleapis.com/log\x00"  # an unknown scheme: the client fails before resolving
_offline = False


class NetworkRisk(RuntimeError):
    """mediapipe's library would contact Google's servers and cannot be stopped in this process."""


def neutralise_file(path: str | os.PathLike) -> bool:
    """Put the dead URL into a library file in place; True when it changed the file (False: already done)."""
    data = bytearray(Path(path).read_bytes())
    count = data.count(TELEMETRY_URL)
    if count == 0:
        if DEAD_URL not in data:
            raise NetworkRisk(f"{path} holds neither the telemetry URL nor its neutralised form: a mediapipe "
                              "this code does not know")
        return False
    if count > 1:
        raise NetworkRisk(f"{path} holds the telemetry URL {count} times: a mediapipe this code does not know")
    Path(path).write_bytes(data.replace(TELEMETRY_URL, DEAD_URL))
    return True


def ensure_offline() -> None:
    """Make sure the loaded mediapipe library cannot post usage stats; raise NetworkRisk where that fails."""
    global _offline
    if _offline:
        return
    from mediapipe.tasks.python.core import mediapipe_c_bindings

    path = mediapipe_c_bindings.load_raw_library()._name
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        offset = data.find(TELEMETRY_URL)
        if offset < 0:
            if data.find(DEAD_URL) < 0:
                raise NetworkRisk(f"{path} is a mediapipe this code does not know: refusing to track")
            _offline = True  # neutralised on disk (the extension's wheels)
            return
    if not sys.platform.startswith("linux"):
        raise NetworkRisk(f"mediapipe's library at {path} would send usage stats to Google and can be stopped only "
                          "in the extension's own wheels on this system: use the bundled Python, not your own")
    _patch_loaded(path, offset)
    _offline = True


def _patch_loaded(path: str, offset: int) -> None:
    """Linux: overwrite the URL in the loaded image (a private, copy-on-write mapping of the file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    real = os.path.realpath(path)
    page = mmap.PAGESIZE
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) < 6 or os.path.realpath(parts[5].strip()) != real:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            file_offset = int(parts[2], 16)
            if not file_offset <= offset < file_offset + (end - start):
                continue
            address = start + offset - file_offset
            if ctypes.string_at(address, len(TELEMETRY_URL)) != TELEMETRY_URL:
                raise NetworkRisk("mediapipe's loaded library differs from its file: refusing to track")
            first = address & ~(page - 1)
            length = ((address + len(TELEMETRY_URL) + page - 1) & ~(page - 1)) - first
            protection = (1 if "r" in parts[1] else 0) | (4 if "x" in parts[1] else 0)
            if libc.mprotect(first, length, 1 | 2) != 0:  # PROT_READ | PROT_WRITE
                raise NetworkRisk(f"cannot make mediapipe's library writable (errno {ctypes.get_errno()})")
            ctypes.memmove(address, DEAD_URL, len(DEAD_URL))
            if libc.mprotect(first, length, protection) != 0:
                libc.mprotect(first, length, 1)  # read-only where executable is refused (SELinux execmod)
            if ctypes.string_at(address, len(DEAD_URL)) != DEAD_URL:
                raise NetworkRisk("mediapipe's usage-stats URL could not be neutralised")
            return
    raise NetworkRisk(f"mediapipe's library {path} is not mapped where expected: refusing to track")
