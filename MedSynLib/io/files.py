"""Writing files and folders without ever harming a user's data: the project's one atomic-write helper and its
one output-folder mechanism.

- :func:`atomic_write`: a file is written under a temporary name beside its place and renamed when complete.
- :class:`OutputFolder`: a result folder (generate, segment, a batch case, a model, a stage) is claimed before any
  work: it must not exist, be an empty folder, or be an earlier result of the same kind (it holds the ``marker``
  file, e.g. ``medsyn.json``), which is replaced only with ``overwrite``. The input's own folder (or one above an
  input), the working directory (or one above it), a file and a link are refused.
- :func:`check_collection_folder`: a folder a command adds to over several runs (``batch``, ``phantoms``,
  ``train-text``, a training run) follows the same rule, except that an earlier folder of the same command (its
  ``is_own`` test) is continued, never replaced; the command writes only its own names inside it.
- :func:`check_output_file`: a single output file (``preview``) must be new, or an earlier output of the same kind
  (``is_own``), replaced only with ``overwrite``; never an input, a folder or a link.

Every path is compared with links resolved (``os.path.realpath``): a link to the input's folder is that folder.
A lock file beside a result folder (``.<name>.medsyn-lock``, ``flock``: released by the kernel when its process
dies) makes a concurrent run into the same folder fail at once. The result is written into a
``.<name>.partial-*`` folder that holds a ``.medsyn-partial`` marker locked by its writer; the next run into the
same parent removes such folders and lock files whose process is gone.

Files and folders get the permissions a plain ``open``/``mkdir`` would give under the process umask.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

PARTIAL_MARKER = ".medsyn-partial"
PARTIAL_INFIX = ".partial-"
LOCK_SUFFIX = ".medsyn-lock"
LOCK_CONTENT = b"MedSyn output lock\n"


class OutputError(ValueError):
    """An output place that may not be written (names the path and the fix)."""


class OutputBusyError(OutputError):
    """Another run is writing the same output folder."""


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_permissions(path: Path, folder: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open`` (``mkdir``) would give under the umask (for files other
    writers create 0600, e.g. safetensors)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], object], encoding: str = "utf-8") -> Path:
    """Write ``content`` (text, bytes, or ``writer(tmp_path)`` that writes the file) to ``path`` atomically.

    The temporary file keeps ``path``'s suffixes so that writers choosing a format by name (SimpleITK, torch) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes), dir=path.parent)
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode(encoding) if isinstance(content, str) else content)
        plain_permissions(tmp, folder=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _real(path: str | Path) -> Path:
    """``path`` absolute with every link resolved (also in a part that does not exist yet)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _check_place(target: str | Path, inputs: Iterable[str | Path | None], kind: str) -> Path:
    """``target`` made absolute; refused when it is a link, holds (or is) an input, or holds the working directory."""
    target = Path(os.path.abspath(Path(target).expanduser()))
    if target.is_symlink():
        raise OutputError(f"{target} is a link. Fix: give a new {kind} name")
    real = _real(target)
    for source in inputs:
        if source is not None and _is_within(_real(source), real):
            raise OutputError(f"{target} {'is' if _real(source) == real else 'holds'} an input of this run "
                              f"({source}); writing there would replace it. Fix: give a new {kind} name for the "
                              "result")
    if kind == "folder" and _is_within(_real(Path.cwd()), real):
        raise OutputError(f"{target} is the working directory (or above it); a result folder replaces its "
                          "target. Fix: give a new folder name, e.g. --out results/run1")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"cannot create {target}: {target.parent} is a file, not a folder. Fix: give a path in a "
                          "folder")
    return target


def check_output_folder(target: str | Path, marker: str, overwrite: bool = False,
                        inputs: Iterable[str | Path | None] = (), what: str = "result") -> Path:
    """The absolute output folder ``target`` if it may be written, else :class:`OutputError` naming the fix.

    See the module docstring for the rule; ``inputs`` are the files the run reads.
    """
    target = _check_place(target, inputs, "folder")
    if not target.exists():
        return target
    if not target.is_dir():
        raise OutputError(f"{target} is an existing file. Fix: give a new folder name")
    if (target / marker).is_file():
        if overwrite:
            return target
        raise OutputError(f"{target} holds an earlier {what}. Fix: pass --overwrite to replace it, or give "
                          "a new folder name")
    if any(target.iterdir()):
        raise OutputError(f"{target} is an existing folder that is not a MedSyn {what} (no {marker}); it is "
                          "never replaced. Fix: give a new folder name")
    return target


def check_collection_folder(target: str | Path, is_own: Callable[[Path], bool],
                            inputs: Iterable[str | Path | None] = (), what: str = "output folder") -> Path:
    """The absolute folder ``target`` that a command adds to (see the module docstring), else
    :class:`OutputError`: it must be new, empty, or pass ``is_own`` (an earlier folder of this command)."""
    target = _check_place(target, inputs, "folder")
    if not target.exists():
        return target
    if not target.is_dir():
        raise OutputError(f"{target} is an existing file. Fix: give a new folder name")
    if any(target.iterdir()) and not is_own(target):
        raise OutputError(f"{target} is an existing folder that is not a MedSyn {what}; nothing in it is replaced. "
                          "Fix: give a new folder name (or an empty folder)")
    return target


def check_output_file(target: str | Path, is_own: Callable[[Path], bool], overwrite: bool = False,
                      inputs: Iterable[str | Path | None] = (), what: str = "output", suffix: str = "") -> Path:
    """The absolute file ``target`` if it may be written (see the module docstring), else :class:`OutputError`.
    ``suffix``: the file name must end with it (the format written)."""
    target = _check_place(target, inputs, "file")
    if suffix and not target.name.lower().endswith(suffix):
        raise OutputError(f"{target} does not end with {suffix}; a {what} is written as {suffix}. Fix: give a file "
                          f"name ending with {suffix}")
    if target.is_dir():
        raise OutputError(f"{target} is a folder. Fix: give a new file name")
    if target.exists():
        if not is_own(target):
            raise OutputError(f"{target} is an existing file that is not a MedSyn {what}; it is never replaced. "
                              "Fix: give a new file name")
        if not overwrite:
            raise OutputError(f"{target} holds an earlier {what}. Fix: pass --overwrite to replace it, or give a "
                              "new file name")
    return target


def _lock(path: Path, content: bytes = b"") -> int:
    """An exclusive ``flock`` on ``path`` (created if needed, ``content`` written into it), or
    :class:`OutputBusyError` if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputBusyError(str(path)) from None
            raise
        try:  # the holder before us may have removed the file: lock the file that is there now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                if content:
                    os.ftruncate(fd, 0)
                    os.write(fd, content)
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _unused(path: Path) -> bool:
    """Whether no living process holds the ``flock`` of ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_partials(parent: Path) -> list[str]:
    """Remove what killed runs left in ``parent``: ``.*.partial-*`` folders holding the :data:`PARTIAL_MARKER` and
    ``.*.medsyn-lock`` files holding :data:`LOCK_CONTENT`, whose process has exited. Returns their names; anything
    else is left alone."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith(".") or entry.is_symlink():
            continue
        if PARTIAL_INFIX in entry.name and entry.is_dir() and _unused(entry / PARTIAL_MARKER):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        elif entry.name.endswith(LOCK_SUFFIX) and entry.is_file() and entry.stat().st_size == len(LOCK_CONTENT) \
                and entry.read_bytes() == LOCK_CONTENT and _unused(entry):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


class _Partial:
    """A fresh marked ``.<name>.partial-*`` folder beside ``target``, its marker locked while it exists."""

    def __init__(self, target: Path):
        self.path = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_INFIX}", dir=target.parent))
        plain_permissions(self.path, folder=True)
        # locked under another name, then renamed: a run clearing stale partials in the same parent never sees
        # the marker unlocked (between its creation and its flock) and takes the folder for a dead run's
        fresh = self.path / f"{PARTIAL_MARKER}.new"
        self.fd = _lock(fresh)
        os.rename(fresh, self.path / PARTIAL_MARKER)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.fd)


class OutputFolder:
    """A claimed output folder (see the module docstring). Use as a context manager that holds the lock and the
    partial folder for the whole run::

        with OutputFolder(out, "medsyn.json", overwrite, inputs=[ct]) as output:   # checked and locked: no work yet
            ...                                                                     # compute
            with output.writing() as tmp:                                           # write into tmp; renamed to
                ...                                                                 # out when this block ends

    Leaving the ``with`` block without a finished :meth:`writing` removes the partial folder.
    """

    def __init__(self, target: str | Path, marker: str, overwrite: bool = False,
                 inputs: Iterable[str | Path | None] = (), what: str = "result"):
        self.marker, self.overwrite, self.inputs, self.what = marker, overwrite, list(inputs), what
        self.path = check_output_folder(target, marker, overwrite, self.inputs, what)
        self._lock_path = self.path.parent / f".{self.path.name}{LOCK_SUFFIX}"
        self._fd: int | None = None
        self._partial: _Partial | None = None

    def __enter__(self) -> "OutputFolder":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder's parent {self.path.parent}: "
                              f"{exc.strerror or exc}") from exc
        try:
            self._fd = _lock(self._lock_path, LOCK_CONTENT)
        except OutputBusyError:
            raise OutputBusyError(f"another MedSyn run is writing {self.path} right now. Fix: wait for it to finish "
                                  "or give a different output folder") from None
        try:  # checked again under the lock: another run may have finished there meanwhile
            check_output_folder(self.path, self.marker, self.overwrite, self.inputs, self.what)
            remove_stale_partials(self.path.parent)
            self._partial = _Partial(self.path)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        if self._partial is not None:
            self._partial.remove()
            self._partial = None
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """The partial folder to write the result into; when the block ends without an error it becomes
        :attr:`path` (an earlier result there is replaced); on an error it is removed."""
        if self._fd is None:
            with self, self.writing() as tmp:
                yield tmp
            return
        if self._partial is None:
            raise RuntimeError(f"the result {self.path} was already written")
        try:
            yield self._partial.path
            self._commit(self._partial.path)
            os.unlink(self.path / PARTIAL_MARKER)
        finally:
            self._partial.remove()
            self._partial = None

    def _commit(self, tmp: Path) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            old = _Partial(self.path)  # the earlier result goes into a marked partial folder, then away
            try:
                os.rename(self.path, old.path / "replaced")
                try:
                    os.rename(tmp, self.path)
                except BaseException:
                    os.rename(old.path / "replaced", self.path)
                    raise
            finally:
                old.remove()
        else:
            os.replace(tmp, self.path)


@contextlib.contextmanager
def output_folder(target: str | Path, marker: str, overwrite: bool = False,
                  inputs: Iterable[str | Path | None] = (), what: str = "result") -> Iterator[Path]:
    """Claim, lock and write ``target`` in one step (:class:`OutputFolder` for callers with no long work before)."""
    with OutputFolder(target, marker, overwrite, inputs, what) as output, output.writing() as tmp:
        yield tmp
