"""The engine <-> add-on contract (DESIGN.md), in one place that both sides import: the job file and the
capture options it carries (`job`), the result file and its checks (`result`), the worker's JSON lines
(`messages`), the ARKit names (`arkit`), the Live Link Face take reader (`takes`), and the clip types both sides
accept. Imports only the standard library and numpy (never torch, never bpy), so Blender's own Python can load it
from the engine's folder."""

from serep_engine.contract.job import CAPTURE_OPTIONS, DEVICES, Job, JobFileError, JobOptions, Option
from serep_engine.contract.messages import MessageError, decode_message, encode_message
from serep_engine.contract.result import CaptureResult, ResultFileError
from serep_engine.contract.takes import Take, TakeError, read_take

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
TAKE_SUFFIXES = (".csv",)  # Live Link Face / ARKit takes (contract/takes.py)

__all__ = ["CAPTURE_OPTIONS", "DEVICES", "TAKE_SUFFIXES", "VIDEO_SUFFIXES", "CaptureResult", "Job", "JobFileError",
           "JobOptions", "MessageError", "Option", "ResultFileError", "Take", "TakeError", "decode_message",
           "encode_message", "read_take"]
