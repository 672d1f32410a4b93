"""Imported at start-up by every Python process whose PYTHONPATH holds this folder (the stages
DVC runs in tests): PEP 578 audit hooks that
- with IGDS_READS set, log every file a stage module opens for reading and every folder it
  lists, inside the working directory, to $IGDS_READS/<pid>.jsonl, so a test can check that a
  stage reads only what its dvc.yaml entry declares (issue 32);
- with IGDS_ENOSPC=<text> set, fail every open for writing of a path that contains <text> with
  "No space left on device", as a full disk does (fault injection)."""

import errno
import json
import os
import sys

_DIR = os.environ.get("IGDS_READS")


def _writes(mode, flags) -> bool:
    """Whether an "open" audit event opens for writing (builtin open's mode, or os.open's flags)."""
    return any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

_SKIP = ("igds", "pipelines", "baselines", "bench", "tests", ".venv", ".git", ".dvc")

if _DIR:
    _cwd = os.getcwd()
    _fd = os.open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _busy = False

    def _log(kind, path):
        global _busy
        argv0 = sys.argv[0] if sys.argv else ""
        if _busy or f"{os.sep}pipelines{os.sep}" not in argv0:  # a stage module (python -m pipelines.X), not dvc
            return
        try:
            path = os.fsdecode(path)
        except TypeError:
            return
        full = os.path.abspath(path)
        if not full.startswith(_cwd + os.sep) or not os.path.exists(full):
            return  # outside the workspace, or a name relative to a directory fd (shutil.rmtree's)
        if kind == "read" and os.path.isdir(full):
            kind = "list"  # a folder opened (to fsync it after a rename, or to walk it): no file's contents
        rel = os.path.relpath(full, _cwd)
        if rel.split(os.sep)[0] in _SKIP:
            return
        _busy = True
        try:
            os.write(_fd, (json.dumps({"argv": sys.argv, "kind": kind, "path": rel}) + "\n").encode())
        finally:
            _busy = False

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if not _writes(mode, flags):
                _log("read", path)
        elif event in ("os.listdir", "os.scandir") and args and args[0] is not None:
            _log("list", args[0])

    sys.addaudithook(_hook)

_FULL = os.environ.get("IGDS_ENOSPC")

if _FULL:
    def _no_space(event, args):
        if event == "open" and not isinstance(args[0], int):
            if _writes(args[1], args[2]) and _FULL in os.fsdecode(args[0]):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(args[0]))

    sys.addaudithook(_no_space)
