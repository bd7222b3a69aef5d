"""Opening workspace files so that no path, and no symlink swapped while we look, leads out of the workspace.

Checking a path and then opening it races: between `realpath` and `open` a command can turn a checked file into a
symlink to `~/.ssh/id_rsa`. So the tools never hand a whole path to the kernel. `locate(root, path)` walks it one
component at a time, each opened relative to the directory fd of the one before with O_NOFOLLOW, and returns the fd
of the directory that holds the last component plus its name; the tools then open that name relative to that fd,
again with O_NOFOLLOW. A symlink met on the way is never followed by the kernel: we read it and continue the walk
with its target, from the directory fd where it was found (an absolute target must name a place under the root).
`..` goes back to the directory fd we came from and never past the root. Whatever is swapped mid-walk, each step
starts from a directory we already hold inside the root, so a walk ends inside the root or fails.

Symlinks inside the workspace that point inside it work (resolved as `realpath` would); one that leads out is
refused with "path is outside the workspace", like `../x` and `/etc/passwd`. A name swapped into a symlink after
the walk makes the final O_NOFOLLOW open fail, and the walk is retried a few times before giving up.

Portability: only POSIX calls with `dir_fd` and O_NOFOLLOW (Linux, macOS, the BSDs). O_PATH (Linux) lets the walk
pass through directories that can be searched but not listed; elsewhere directories are opened read-only, so an
unlistable directory on the way is refused. There is no racy fallback: on a system without `dir_fd` (Windows,
where the sandbox does not run either) `locate` refuses every path rather than check one and then open it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nanocode.agents.sandbox import SandboxPathError, check_path_text

MAX_SYMLINKS = 40  # as Linux's own limit on symlinks followed in one path (ELOOP beyond)
RETRIES = 5  # walks tried when the last component keeps changing under us
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


@dataclass
class Location:
    """Where a path leads: the directory that holds it (an open fd) and the name in it ("." for that directory
    itself, when the path names a directory such as the root)."""

    dir_fd: int
    name: str
    info: os.stat_result | None  # lstat of the name when the walk reached it; None when it does not exist


class PathChanged(OSError):
    """The path kept changing while we opened it (a symlink swapped back and forth)."""


class SpecialFile(OSError):
    """The path names a FIFO, a device or a socket: never opened (a FIFO blocks, a device may act on open)."""


def split(root: Path, text: str) -> list[str]:
    """The components of `text` relative to `root`, or SandboxPathError for a path that is no path or starts
    outside (an absolute path must start with the root's real path)."""
    check_path_text(text)
    if os.path.isabs(text):
        base = str(root)
        if text != base and not text.startswith(base.rstrip("/") + "/"):
            raise SandboxPathError(f"path is outside the workspace: {text}")
        text = text[len(base) :]
    return [p for p in text.split("/") if p not in ("", ".")]


@contextlib.contextmanager
def locate(root: Path, text: str, *, make_dirs: bool = False) -> Iterator[Location]:
    """The Location of `text` inside `root` (see the module docstring); the fd is closed on exit. `make_dirs`
    creates missing directories on the way (for a new file). Raises SandboxPathError when the path leads out,
    FileNotFoundError / NotADirectoryError when a directory on the way is missing or is a file."""
    if os.open not in os.supports_dir_fd:
        raise SandboxPathError("this system cannot open files relative to a directory; the file tools are off")
    parts = deque(split(root, text))
    stack = [os.open(root, _DIR_FLAGS)]
    hops = 0
    try:
        while parts:
            part = parts.popleft()
            if part == "..":
                if len(stack) == 1:
                    raise SandboxPathError(f"path is outside the workspace: {text}")
                os.close(stack.pop())
                continue
            top = stack[-1]
            try:
                info = os.stat(part, dir_fd=top, follow_symlinks=False)
            except FileNotFoundError:
                if parts and make_dirs:
                    hops += 1  # bounds the loop should something keep removing what we make
                    if hops > MAX_SYMLINKS:
                        raise PathChanged(errno.ELOOP, "the path kept changing while it was opened") from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=top)
                    parts.appendleft(part)  # open it on the next round, whatever is there by then
                    continue
                if parts:
                    raise
                info = None  # a last component that does not exist: the caller may create it
            if info is not None and stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise SandboxPathError(f"too many levels of symbolic links: {text}")
                try:
                    target = os.readlink(part, dir_fd=top)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
                    parts.appendleft(part)  # no longer a symlink (swapped since the lstat): look again
                    continue
                if os.path.isabs(target):
                    try:
                        rest = split(root, target)
                    except SandboxPathError:
                        raise SandboxPathError(f"path is outside the workspace: {text}") from None
                    while len(stack) > 1:
                        os.close(stack.pop())
                else:
                    rest = [p for p in target.split("/") if p not in ("", ".")]
                parts.extendleft(reversed(rest))
                continue
            if not parts:
                yield Location(stack[-1], part, info)
                return
            try:
                stack.append(os.open(part, _DIR_FLAGS, dir_fd=top))
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                if info is not None and not stat.S_ISDIR(info.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", part) from None
                hops += 1  # it was a directory a moment ago and is a symlink now: look again
                if hops > MAX_SYMLINKS:
                    raise PathChanged(errno.ELOOP, "the path kept changing while it was opened") from None
                parts.appendleft(part)
        yield Location(stack[-1], ".", os.fstat(stack[-1]))
    finally:
        for fd in stack:
            os.close(fd)


def open_beneath(root: Path, text: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
    """(fd, its stat) for the file or directory `text` names inside `root`, opened without following a symlink.
    A FIFO, device or socket raises SpecialFile before any open; one swapped in after that check is opened without
    blocking (O_NONBLOCK) and shows in the returned stat, which the caller checks. A regular file's fd is made
    blocking again."""
    for _ in range(RETRIES):
        with locate(root, text) as loc:
            if loc.info is not None and not (stat.S_ISREG(loc.info.st_mode) or stat.S_ISDIR(loc.info.st_mode)):
                raise SpecialFile(errno.EINVAL, "not a regular file", text)
            try:
                fd = os.open(loc.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=loc.dir_fd)
            except OSError as e:
                if e.errno == errno.ELOOP:  # swapped into a symlink since the walk: walk again
                    continue
                raise
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            os.set_blocking(fd, True)
        return fd, info
    raise PathChanged(errno.ELOOP, "the path kept changing while it was opened")
