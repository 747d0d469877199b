"""Keeping mediapipe off the network: users' footage is private, and the extension declares file access only.

mediapipe's Tasks library (1.2.3: libmediapipe.so / .dll / .dylib) builds a usage-stats logger for every task
and POSTs to the compiled-in `https://play.googleapis.com/log` 60 s after a task is created and when it is
closed. No option, flag or environment variable turns it off (its logger factory always builds the HTTP
client; the legacy face mesh of 0.10.21 had none). The URL is read from the library's constant data at each
post, so the same-length `xttps://...` in its place makes the HTTP client fail on the scheme before any DNS
lookup, after which it stays in its error state and never tries again. Two ways to put it there:
- on disk, in the library file (`neutralise_file`): build.py does this to the wheels the extension ships. A macOS
  dylib must stay validly signed to load; mediapipe's is signed ad hoc by its linker (a code directory of SHA-256
  page hashes and no certificate), so the hash of the changed page is written into the code directory, as the
  linker would have; a library signed with a certificate is refused, since that signature cannot be redone;
- in memory, in this process (`ensure_offline`, Linux): for a library installed by pip (a checkout's .venv,
  a user's own Python), before the first landmarker is made. Each process makes its own.
`ensure_offline` refuses to let tracking start when neither holds.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import struct
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
    offset = data.find(TELEMETRY_URL)
    data[offset:offset + len(DEAD_URL)] = DEAD_URL
    if data[:4] == MACHO_64:
        for directory in code_directories(data, path):
            rehash_pages(data, directory, offset, offset + len(DEAD_URL))
    Path(path).write_bytes(data)
    return True


MACHO_64 = struct.pack("<I", 0xFEEDFACF)
LC_CODE_SIGNATURE = 0x1D
CODE_DIRECTORY, SIGNATURE_SLOT = 0xFADE0C02, 0x10000  # blob magic; the superblob slot of a certificate signature
HASHES = {1: hashlib.sha1, 2: hashlib.sha256}  # a code directory's hashType


def code_directories(data: bytes, path) -> list[tuple[int, ...]]:
    """A 64-bit Mach-O's code directories as (hash offset, page count, code limit, hash type, page size), all in
    the file; NetworkRisk where the file has no ad hoc signature this code can keep valid."""
    commands = struct.unpack_from("<I", data, 16)[0]
    position, signature = 32, None
    for _ in range(commands):
        command, size = struct.unpack_from("<II", data, position)
        if command == LC_CODE_SIGNATURE:
            signature = struct.unpack_from("<I", data, position + 8)[0]
        position += size
    if signature is None:
        raise NetworkRisk(f"{path} is an unsigned Mach-O library: it would not load on macOS")
    directories = []
    for index in range(struct.unpack_from(">I", data, signature + 8)[0]):
        slot, offset = struct.unpack_from(">II", data, signature + 12 + 8 * index)
        magic, length = struct.unpack_from(">II", data, signature + offset)
        if slot == SIGNATURE_SLOT and length > 8:
            raise NetworkRisk(f"{path} is signed with a certificate: changed, it would no longer load on macOS")
        if magic == CODE_DIRECTORY:
            start = signature + offset
            hashes, _, _, pages, limit, _, kind, _, page_shift = struct.unpack_from(">IIIIIBBBB", data, start + 16)
            directories.append((start + hashes, pages, limit, kind, 1 << page_shift))
    return directories


def rehash_pages(data: bytearray, directory: tuple[int, ...], first: int, end: int) -> None:
    """Write the hashes of the pages holding bytes first..end-1 into one code directory."""
    hashes, pages, limit, kind, page = directory
    size = HASHES[kind]().digest_size
    for number in range(first // page, (end - 1) // page + 1):
        digest = HASHES[kind](data[number * page:min((number + 1) * page, limit)]).digest()
        data[hashes + number * size:hashes + (number + 1) * size] = digest


def pages_match(data: bytes, path="library") -> bool:
    """Whether every page of a signed Mach-O still has the hash its code directories hold (what macOS checks as
    it loads the pages)."""
    for hashes, pages, limit, kind, page in code_directories(data, path):
        size = HASHES[kind]().digest_size
        for number in range(pages):
            digest = HASHES[kind](data[number * page:min((number + 1) * page, limit)]).digest()
            if digest != data[hashes + number * size:hashes + (number + 1) * size]:
                return False
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
