"""Process-wide runtime settings (nanocode.train.runtime), each checked in a fresh interpreter: they only take effect
at start-up."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from nanocode.train.runtime import CPU_SCHEDULER_FLAG, use_memory_ordered_cpu_scheduler

# Allocate, touch and free a 64 MiB block three times on a worker thread (as XLA:CPU's executor threads do) and
# report the page faults of the last two rounds: a block that was unmapped on free faults in again page by page.
FAULTS_SCRIPT = """
import ctypes, json, resource, sys, threading
from nanocode.train.runtime import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "retain" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
faults = []
def rounds():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(64 * 2**20)
        ctypes.memset(block, 1, 64 * 2**20)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
worker = threading.Thread(target=rounds)
worker.start()
worker.join()
print(json.dumps({"retained": retained, "faults": faults[1:]}))
"""


def run_faults(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_retained_memory_is_reused_without_page_faults():
    default, retained = run_faults("default"), run_faults("retain")
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert retained["retained"] is True
    assert min(default["faults"]) > pages // 2  # glibc's default: unmapped on free, faulted in again
    assert max(retained["faults"]) < pages // 20  # kept: the next block reuses the same pages


def test_scheduler_flag_is_added_once_and_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    use_memory_ordered_cpu_scheduler()
    use_memory_ordered_cpu_scheduler()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {CPU_SCHEDULER_FLAG}=false"
    monkeypatch.setenv("XLA_FLAGS", f"{CPU_SCHEDULER_FLAG}=true")
    use_memory_ordered_cpu_scheduler()
    assert os.environ["XLA_FLAGS"] == f"{CPU_SCHEDULER_FLAG}=true"
