"""The sandbox: path confinement, the scrubbed environment, limits, and the isolation it reports (probed, not assumed)."""

import os
import socket

import pytest

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
    r = sandbox.run("sleep 300 & echo $! > pid.txt; echo started")
    assert (r.output, r.exit_code, r.stopped) == ("started\n", 0, None)  # it did not wait for the sleep (timeout 10 s)
    assert not _sleepers("sleep 300")


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
    if iso.readonly_outside:
        r = sandbox.run(f"touch {sandbox.root.parent}/escaped.txt")
        assert r.exit_code != 0 and not (sandbox.root.parent / "escaped.txt").exists()
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


def test_without_namespaces_limits_still_hold(tmp_path):
    """isolate=False (what a machine without unshare gets): timeout, output bound and cleanup still work."""
    with Sandbox(tmp_path, isolate=False, timeout_s=1, max_output_bytes=1000) as sb:
        assert not sb.isolation.network_removed and not sb.isolation.pid_namespace
        r = sb.run("sleep 300 & sleep 300")
        assert r.stopped == "timeout" and r.exit_code is None
        assert not _sleepers("sleep 300")
        r = sb.run("yes")
        assert r.stopped == "output" and len(r.output) == 1000 and r.truncated
        assert sb.run("echo $HOME").output == f"{sb.home}\n"


_CONNECT = "python -c 'import socket; socket.create_connection((\"127.0.0.1\", 9))' 2>&1 | tail -1"


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
