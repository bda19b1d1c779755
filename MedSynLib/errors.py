"""Exit codes of every ``medsyn`` command, and the one place that turns an exception into a message for the user
(:func:`describe`) and runs a command under that rule (:func:`run_guarded`).

0 done; 1 internal error (a bug: the message says how to get the traceback); 2 bad input or setting, or a file
that cannot be read or written (the message names it and the fix); 3 out of memory; 4 segmentation not trusted
(``medsyn segment``'s quality check); 130 cancelled (Ctrl-C, SIGTERM); 141 the reader of the output closed it.
``MEDSYN_DEBUG=1`` lets the traceback through instead.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

EXIT_DONE, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, EXIT_UNTRUSTED, EXIT_CANCELLED = 0, 1, 2, 3, 4, 130
EXIT_OUTPUT_CLOSED = 141
"""The reader of stdout closed it (``medsyn models list | head -1``): what a shell reports for SIGPIPE."""
DEBUG_ENV = "MEDSYN_DEBUG"
OOM_FIX = ("use --max-gpu-memory GB (tiles the super-resolution stage; try the GPU's size minus 2), "
           "--precision bf16, --lowres-only, or --device cpu")
OS_FIXES = {
    errno.ENOSPC: "free disk space or write to another disk",
    errno.EDQUOT: "free disk space or write to another disk",
    errno.EROFS: "write to a folder on a writable disk",
    errno.EACCES: "check the permissions, or use a folder you may write to",
    errno.EPERM: "check the permissions, or use a folder you may write to",
    errno.ENOENT: "check the path",
}
BAD_INPUT_FIX = "correct the input or option named above and run again (`medsyn COMMAND --help` lists the options)"
"""The fix of a refusal whose message names no fix of its own."""
FIX_MARK = re.compile(r"[\s.;,]*\bFix:\s*")


class MedSynError(ValueError):
    """A refusal that carries its ``fix`` apart from the problem (both shown to the user; exit code 2)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}" if fix else problem)
        self.problem, self.fix = problem, fix


class Refusal(ValueError):
    """A check that refuses an input or a result the user may still force (exit code 4): its ``kind``, its
    ``fix`` (else the message names one after ``Fix:``) and its figures (:meth:`details`, for the JSON event)."""

    kind = "refused"
    fix = ""

    def details(self) -> dict:
        return {}


class DescribedError(Exception):
    """A failure already described where it happened (e.g. by the command on a server): its :class:`Failure` and
    the ``text`` the user is shown (what that command printed)."""

    def __init__(self, failure: Failure, text: str = ""):
        super().__init__(failure.message)
        self.failure, self.text = failure, text or failure.text()


def split_fix(text: str) -> tuple[str, str]:
    """``"<problem>. Fix: <what to do>"`` -> (problem, fix); a text without one ``Fix:`` (none, or one per listed
    problem) -> (text, "")."""
    parts = FIX_MARK.split(text.strip())
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (text.strip(), "")


@dataclass(frozen=True)
class Failure:
    """What the user is told: exit ``code``, ``message``, ``fix`` (may be empty) and ``kind`` for JSON events."""

    code: int
    message: str
    fix: str = ""
    kind: str = "bad_input"

    details: dict = field(default_factory=dict)
    """What the JSON ``error`` event carries besides (e.g. the figures of a failed check)."""

    def fields(self) -> dict:
        """``message``, ``fix`` and ``kind``: the error record of a JSON event or a server job."""
        return {"message": self.message, "fix": self.fix, "kind": self.kind}

    def event(self) -> dict:
        return {"event": "error", **self.fields(), **self.details}

    def text(self) -> str:
        """``medsyn: error: <problem>`` and, on its own line, ``fix: <what to do>``."""
        return f"medsyn: error: {self.message}" + (f"\nfix: {self.fix}" if self.fix else "")


def out_of_memory(exc: BaseException) -> bool:
    """A host or GPU allocation failure (``MemoryError``, ``torch.OutOfMemoryError``, or its message)."""
    if isinstance(exc, MemoryError) or any(t.__name__ == "OutOfMemoryError" for t in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def describe(exc: BaseException) -> Failure:
    """The exit code, message and fix for ``exc`` (anything but KeyboardInterrupt / SystemExit). The fix is never
    empty: the one the message names after ``Fix:``, else the one of its kind."""
    if isinstance(exc, DescribedError):
        return exc.failure
    failure = _describe(exc)
    message, fix = (failure.message, "") if failure.fix else split_fix(failure.message)
    return Failure(failure.code, message, failure.fix or fix or BAD_INPUT_FIX, failure.kind, failure.details)


def _describe(exc: BaseException) -> Failure:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MedSynError):
        return Failure(EXIT_BAD_INPUT, exc.problem, exc.fix)
    if isinstance(exc, Refusal):
        problem, fix = (str(exc).strip(), exc.fix) if exc.fix else split_fix(str(exc))
        return Failure(EXIT_UNTRUSTED, problem, fix, exc.kind, exc.details())
    if out_of_memory(exc):
        if "Fix:" in str(exc):  # our own estimates say what to change
            return Failure(EXIT_OUT_OF_MEMORY, str(exc), "", "out_of_memory")
        return Failure(EXIT_OUT_OF_MEMORY, f"out of memory: {first}", OOM_FIX, "out_of_memory")
    if isinstance(exc, OSError) and exc.errno is not None:  # raised by the system, not by our own checks
        where = f" {exc.filename}" if exc.filename else ""
        return Failure(EXIT_BAD_INPUT, f"cannot use{where}: {exc.strerror or first}",
                       OS_FIXES.get(exc.errno, "check the path and the disk"), "os_error")
    if isinstance(exc, pickle.UnpicklingError):
        return Failure(EXIT_BAD_INPUT, f"a weights file holds more than tensors and is not loaded: {first}",
                       "use safetensors or a plain state_dict saved with torch.save")
    if isinstance(exc, FileNotFoundError):  # our own "... not found: PATH"
        return Failure(EXIT_BAD_INPUT, str(exc).strip(), "check the path", "os_error")
    if isinstance(exc, (ValueError, OSError, RuntimeError)):
        fix = "use --device cpu" if "CUDA" in str(exc) and "Fix:" not in str(exc) else ""
        return Failure(EXIT_BAD_INPUT, str(exc).strip() or type(exc).__name__, fix)
    return Failure(EXIT_INTERNAL, f"internal error ({type(exc).__name__}: {first})",
                   f"run again with {DEBUG_ENV}=1 for the traceback and report it", "internal")


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_guarded(work: Callable[[], int | None], emit: Callable[[dict], None] | None = None,
                writes_result: bool = False) -> int:
    """Run a command's ``work() -> exit code`` so that it ends as :mod:`MedSynLib.errors` promises: SIGTERM
    cancels like Ctrl-C (clean-up runs); a cancellation, a closed output and every error end as a message on
    stderr, a JSON event through ``emit`` (``cancelled`` or :meth:`Failure.event`) and the exit code.
    ``writes_result``: the command writes its result atomically, so the messages say that nothing was written."""
    emit = emit or (lambda event: None)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return int(work() or 0)
    except KeyboardInterrupt:
        emit({"event": "cancelled"})
        print("medsyn: cancelled" + ("; nothing was written for the unfinished run" if writes_result else ""),
              file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `medsyn models list | head -1`: the reader has what it wanted; no error message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor a second one when Python exits
        return EXIT_OUTPUT_CLOSED
    except Exception as exc:
        if debugging():
            raise
        failure = describe(exc)
        if isinstance(exc, DescribedError):  # its own command told the user already
            text = exc.text
        else:
            written = writes_result and failure.code in (EXIT_OUT_OF_MEMORY, EXIT_UNTRUSTED)
            text = failure.text() + ("\nnothing was written" if written else "")
        if failure.code != EXIT_CANCELLED:
            emit(failure.event())
        print(text, file=sys.stderr)
        return failure.code
    finally:
        signal.signal(signal.SIGTERM, previous)
