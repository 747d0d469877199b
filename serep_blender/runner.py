"""One engine worker process seen from Blender: started with the DESIGN.md command, its JSON lines read by
a thread into a queue, drained by `poll()` from the main thread (a timer or a wait loop), never blocking.

The job, the result checks and the messages come from the engine's own contract module
(`serep_engine.contract`, standard library and numpy only), imported from the engine's folder: both sides
of the process boundary read and write them with the same code. So does `serep_engine.tune` (numpy only), which
re-bakes a kept result with the panel's controls without starting the engine."""

from __future__ import annotations

import importlib
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent


def engine_path() -> Path:
    """Where the `serep_engine` package is: inside the installed extension, or beside the add-on in a checkout."""
    bundled = ADDON_DIR / "engine"
    return bundled if (bundled / "serep_engine").is_dir() else ADDON_DIR.parent


def _import_engine_module(name: str):
    if str(engine_path()) not in sys.path:
        sys.path.append(str(engine_path()))
    return importlib.import_module(name)


contract = _import_engine_module("serep_engine.contract")
tune = _import_engine_module("serep_engine.tune")  # the re-bake's controls: numpy only, run in Blender itself


def worker_environment(bundled_site: str | None, cache_dir: str | None) -> dict:
    """The worker's environment: the engine (and, for Blender's own Python, the extension's wheels) first."""
    env = dict(os.environ)
    paths = [str(engine_path())]
    if bundled_site:
        paths.append(bundled_site)
        env["PYTHONNOUSERSITE"] = "1"
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    if (engine_path() / "data").is_dir():  # the extension bundles the face model the engine needs
        env["SEREP_DATA"] = str(engine_path() / "data")
    if cache_dir:
        env["SEREP_CACHE"] = cache_dir
    return env


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    meaning = {"SIGKILL": "killed", "SIGSEGV": "crashed", "SIGABRT": "crashed", "SIGBUS": "crashed",
               "SIGTERM": "terminated"}.get(name, "ended")
    return f"{meaning} by {name}"


@dataclass
class RunState:
    stage: str = "starting"
    done: int = 0
    total: int = 0
    fps: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str = ""
    result: str | None = None
    extra: dict = field(default_factory=dict)  # further fields of the done line (arkit_keys)
    cancelled: bool = False
    finished: bool = False


class WorkerRun:
    def __init__(self, python: str, job_path: Path, env: dict):
        self.job_path = job_path
        self.log_path = job_path.with_name("worker.log")
        self.state = RunState()
        self._lines: queue.Queue = queue.Queue()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [python, "-m", "serep_engine", "worker", "--job", str(job_path)], stdout=subprocess.PIPE,
                stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=str(job_path.parent),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self._lines.put(raw)
        self._lines.put(None)

    def poll(self) -> RunState:
        """Take in whatever the worker said since the last call; `state.finished` once it has exited."""
        state = self.state
        while True:
            try:
                raw = self._lines.get_nowait()
            except queue.Empty:
                return state
            if raw is None:
                self._finish()
                return state
            self._take(raw)

    def _take(self, raw: bytes) -> None:
        state = self.state
        try:
            message = contract.decode_message(raw)
        except contract.MessageError:
            state.warnings.append(f"worker said something outside the protocol: {raw[:200]!r}")
            return
        kind = message["type"]
        if kind == "progress":
            state.stage, state.done, state.total = message["stage"], message["done"], message["total"]
            state.fps = message["fps"]
        elif kind == "warning":
            state.warnings.append(message["message"])
        elif kind == "error":
            state.error, state.traceback = message["message"], message["traceback"]
            state.cancelled = bool(message.get("cancelled"))
        elif kind == "done":
            state.result = message["result"]
            state.extra = {k: v for k, v in message.items() if k not in ("type", "result")}

    def _finish(self) -> None:
        state = self.state
        code = self.process.wait()
        self.process.stdout.close()
        if state.result is None and state.error is None:
            tail = self.log_tail()
            how = f"exit status {code}" if code >= 0 else _signal_name(-code)
            state.error = f"the engine stopped ({how}) without a result" + (f": {tail}" if tail else "")
        if code != 0 and state.result is not None:
            state.result, state.error = None, f"the engine exited with status {code} after reporting a result"
        state.finished = True

    def log_tail(self, lines: int = 1) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def cancel(self) -> None:
        """Ask the worker to stop (SIGTERM; on Windows the process is ended); it writes no result."""
        self.state.cancelled = True
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout: float = 10.0) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
