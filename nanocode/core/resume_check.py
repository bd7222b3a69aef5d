"""Whether a checkpoint may be resumed by this run: the same config (binding by binding), tokenizer and data spec.

A resume under another config would continue a different experiment from the saved weights without saying so; the
check refuses in one line naming the first differing binding. The mesh may change (restores reshard), so its
bindings are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nanocode.core.errors import CheckpointError

log = logging.getLogger(__name__)

# The fields that must match for a resume to make sense, and how an error names them.
COMPATIBLE_FIELDS = {"config": "config", "tokenizer": "tokenizer fingerprint", "data_spec": "data spec fingerprint"}
# Config bindings that may change between a save and its resume (the mesh is resharded on restore).
RESUMABLE_BINDINGS = ("axes", "distributed_initialize")


def check_compatible(
    meta: Mapping[str, Any],
    expected: Mapping[str, Any],
    force: bool = False,
    *,
    resumable: Sequence[str] = RESUMABLE_BINDINGS,
) -> list[str]:
    """Refuse (CheckpointError, one line) to resume a checkpoint made with another config, tokenizer or data spec.

    Fields missing from `expected` are not checked. Config texts are compared binding by binding, ignoring the
    configurables and macros named in `resumable` (the mesh may change on resume). With force=True the mismatches
    are returned (for a warning) instead of raised.
    """
    problems = []
    for field, label in COMPATIBLE_FIELDS.items():
        want = expected.get(field)
        if want is None:
            continue
        have = meta.get(field)
        if field == "config":
            diff = _config_diff(str(have or ""), str(want), resumable)
            if diff:
                problems.append(f"config differs at {diff}")
        elif have != want:
            problems.append(f"{label} differs (checkpoint {have!r}, this run {want!r})")
    if problems and not force:
        where = f"checkpoint step {meta.get('step', '?')}"
        raise CheckpointError(f"{where}: {problems[0]}; refusing to resume (force=True / --force overrides)")
    for p in problems:
        log.warning("resuming despite: %s", p)
    return problems


def config_bindings(config: str, ignore: Sequence[str] = ()) -> dict[str, str]:
    """Parse gin's config_str into {selector: value}, joining continuation lines and skipping comments/ignored names."""
    bindings: dict[str, str] = {}
    current = None
    for line in config.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and current is not None:  # gin wraps long values onto indented lines
            bindings[current] += " " + line.strip()
            continue
        selector, sep, value = line.partition("=")
        if not sep:  # `import x` / `include '...'` lines
            selector, value = line.strip(), ""
        current = " ".join(selector.split())
        bindings[current] = value.strip()
    ignored = set(ignore)
    return {
        k: " ".join(v.replace("\\", " ").split())
        for k, v in bindings.items()
        if _configurable_name(k) not in ignored and k not in ignored
    }


def _configurable_name(selector: str) -> str:
    """'train/nanocode.mesh.axes.shape' -> 'axes'; a macro 'MESH' -> 'MESH'."""
    name = selector.rsplit("/", 1)[-1]
    return name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name


def _config_diff(saved: str, current: str, ignore: Sequence[str]) -> str:
    a, b = config_bindings(saved, ignore), config_bindings(current, ignore)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key} (checkpoint {_short(a.get(key))}, this run {_short(b.get(key))})"
    return ""


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "unset"
    return value if len(value) <= limit else value[: limit - 3] + "..."
