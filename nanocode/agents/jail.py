"""Build a command's private filesystem view, then exec the command in it (run by nanocode.agents.sandbox).

Usage: `python -I -S jail.py STAGE CWD STEP... -- ARGV...`, already inside fresh mount and PID namespaces
(util-linux `unshare --mount --pid --fork`). The jail mounts a tmpfs on the staging directory, performs the steps
inside it, makes it the root with pivot_root, detaches the old root entirely (nothing of it stays reachable, not even
through /proc/self/root), remounts the new root read-only, and execs ARGV in CWD. Steps (written by Sandbox), each a
kind and its fixed number of arguments:
    bind DEST SOURCE ro|rw          tmpfs DEST SIZE_BYTES OCTAL_MODE dev|nodev       proc DEST PID_MAX (0: keep)
    symlink DEST TARGET             dir DEST

Stdlib only, no site import, no json or re: it runs before every command, so it must start fast and must not depend
on what the user installed.
"""

import ctypes
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
# statvfs f_flag bits that a bind remount must keep: in a user namespace the kernel locks them and refuses to drop them
KEPT_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME}
ST_RELATIME = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class JailError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else os.fsencode(s) for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {source or fstype or ''} on {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = 155  # x86_64 and most others use their own numbers; aarch64 is 41
    if os.uname().machine in ("aarch64", "arm64"):
        nr = 41
    _check(_libc.syscall(nr, os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


ARITY = {"bind": 3, "tmpfs": 4, "proc": 2, "symlink": 2, "dir": 1}


def unescape(raw: bytes) -> str:
    """A mountinfo field with its octal escapes (\\040 for a space) decoded."""
    parts = raw.split(b"\\")
    out = parts[0] + b"".join(bytes([int(p[:3], 8)]) + p[3:] for p in parts[1:])
    return os.fsdecode(out)


def submounts(path: str) -> list[str]:
    """Mount points at or below `path`, shallowest first (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = unescape(line.split()[4])
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"))


def remount_readonly(path: str) -> None:
    """Make the bind mount at `path` and every mount below it read-only, keeping the flags the kernel locks."""
    for point in submounts(path):
        try:
            st = os.statvfs(point)
        except OSError:
            continue  # a mount we cannot see into (e.g. a stale automount): leave it to the kernel
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        flags |= sum(ms for st_bit, ms in KEPT_FLAGS.items() if st.f_flag & st_bit)
        flags |= MS_RELATIME if st.f_flag & ST_RELATIME else 0
        mount(None, point, None, flags)


def make_mount_point(target: str, like: str) -> None:
    """An empty directory or file at `target` to mount `like` on (parents made as needed)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(like):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        with open(target, "w"):
            pass


def step(stage: str, op: list[str]) -> None:
    kind, dest = op[0], stage + op[1]
    if kind == "bind":
        source, read_only = op[2], op[3] == "ro"
        if os.path.islink(source):  # e.g. /bin -> usr/bin: the same link, its target is bound on its own
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.symlink(os.readlink(source), dest)
            return
        make_mount_point(dest, source)
        mount(source, dest, None, MS_BIND | MS_REC)
        if read_only:
            remount_readonly(dest)
    elif kind == "tmpfs":
        os.makedirs(dest, exist_ok=True)
        flags = MS_NOSUID | (0 if op[4] == "dev" else MS_NODEV)
        mount("tmpfs", dest, "tmpfs", flags, f"size={int(op[2])},mode={op[3]}")
    elif kind == "proc":
        os.makedirs(dest, exist_ok=True)
        mount("proc", dest, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if int(op[2]):
            with open(f"{dest}/sys/kernel/pid_max", "w") as f:
                f.write(str(op[2]))
        mount(None, dest, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    elif kind == "symlink":
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink(op[2], dest)
    elif kind == "dir":
        os.makedirs(dest, exist_ok=True)


def parse(words: list[str]) -> tuple[str, str, list[list[str]], list[str]]:
    """(stage, cwd, steps, argv) from the command line after the script name."""
    if len(words) < 2:
        raise JailError("usage: jail.py STAGE CWD STEP... -- ARGV...")
    stage, cwd, rest, steps = words[0], words[1], words[2:], []
    while rest and rest[0] != "--":
        n = ARITY.get(rest[0])
        if n is None or len(rest) <= n:
            raise JailError(f"bad step {rest[0]!r}")
        steps.append(rest[: n + 1])
        rest = rest[n + 1 :]
    if len(rest) < 2:
        raise JailError("no command after --")
    return stage, cwd, steps, rest[1:]


def build(stage: str, cwd: str, steps: list[list[str]]) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates back to the host
    mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for op in steps:
        step(stage, op)
    os.mkdir(stage + "/.old")
    pivot_root(stage, stage + "/.old")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "detach the old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(cwd)


def main(words: list[str]) -> int:
    try:
        stage, cwd, steps, argv = parse(words)
        build(stage, cwd, steps)
    except (JailError, OSError, ValueError) as e:
        print(f"sandbox: cannot build the command's filesystem: {e}", file=sys.stderr)
        return 125
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
