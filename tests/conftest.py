"""Shared test set-up: 8 simulated CPU devices, a persistent compilation cache, freed memory kept for reuse, and an
isolated workspace."""

import os

# Before jax is imported anywhere: 8 host devices for mesh tests (single-device code still runs on device 0).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/nanocode-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

from nanocode.train.runtime import retain_freed_memory  # noqa: E402

# As the CLI does, before JAX starts its threads: XLA:CPU's per-step temporaries are reused, not faulted back in.
retain_freed_memory()


@pytest.fixture(autouse=True)
def workspace_base(tmp_path, monkeypatch):
    """Every test gets its own $NANOCODE_BASE_DIR so nothing touches the user's real workspace."""
    base = tmp_path / "nanocode_base"
    monkeypatch.setenv("NANOCODE_BASE_DIR", str(base))
    return base


@pytest.fixture
def gin_clean():
    """Clear gin's global config before and after a test that parses gin files."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


# The longest modules, started first: under `pytest -n 2 --dist loadfile` (the README's command) each module runs on
# one worker in collection order, so a long module collected last would leave the other worker idle at the end.
LONGEST_FIRST = ("test_debug_learning.py", "test_plan.py", "test_flagship.py", "test_train_pretrain.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each module, and of all other modules, is kept
