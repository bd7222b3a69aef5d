"""Where a task's repository lives while an agent works on it, and how its hidden check is run.

A task's repository is written to `<base>/<repo name>` with base `/tmp/nanocode-tasks` (or $NANOCODE_TASK_DIR):
a fixed path, so the absolute paths Python prints in tracebacks are the same on every run and the generated data
is byte-for-byte reproducible. An exclusive lock on `<base>/.<repo name>.lock` (flock, dropped by the kernel if the
process dies) keeps two tasks, threads or processes from sharing a directory; the directory is wiped before and
after use. Commands run with PYTHONDONTWRITEBYTECODE=1: a .pyc cached before an edit that keeps the file's size
within the same second would otherwise be reused and run the old code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tasks.base import AnswerCheck, CheckResult, CommandCheck, Task
from nanocode.core.interfaces import Messages

DEFAULT_BASE = "/tmp/nanocode-tasks"
SANDBOX_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


def task_base() -> Path:
    base = Path(os.environ.get("NANOCODE_TASK_DIR", DEFAULT_BASE))
    try:
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o1777)  # shared by users like /tmp itself; each repo directory is still locked
    except PermissionError:
        pass  # someone else's: fine as long as we can write to it
    if not os.access(base, os.W_OK | os.X_OK):
        base = base.with_name(f"{base.name}-{os.getuid()}")
        base.mkdir(parents=True, exist_ok=True)
    return base


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def task_workspace(task: Task, base: Path | None = None) -> Iterator[Path]:
    """The task's repository, freshly written at its fixed path, held exclusively until the block ends."""
    base = base or task_base()
    with open(base / f".{task.repo}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = base / task.repo
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        try:
            write_files(root, task.files)
            yield Path(os.path.realpath(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)


def open_sandbox(root: Path, *, timeout_s: float = 30.0, isolate: bool = True) -> Sandbox:
    # isolate=False is the caller's explicit choice (scripted, trusted commands): it opts in to running unisolated
    return Sandbox(
        root,
        timeout_s=timeout_s,
        max_output_bytes=32 * 1024,
        isolate=isolate,
        allow_unisolated=not isolate,
        env=SANDBOX_ENV,
    )


def run_check(task: Task, messages: Messages, sandbox: Sandbox) -> CheckResult:
    """Judge the agent's work: write the hidden files and run the command, or match the final answer."""
    check = task.check
    if isinstance(check, AnswerCheck):
        return check.judge(messages)
    if isinstance(check, CommandCheck):
        for rel, text in check.files.items():
            path = sandbox.root / rel  # at the root, never resolved: the agent may have left a symlink there
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            path.write_text(text, encoding="utf-8")
        result = sandbox.run(check.command)
        if result.exit_code == 0:
            return CheckResult(True, "check passed")
        last = (result.output.strip().splitlines() or [result.stop_detail or "failed"])[-1]
        return CheckResult(False, last[:300])
    raise TypeError(f"unknown check type {type(check).__name__}")
