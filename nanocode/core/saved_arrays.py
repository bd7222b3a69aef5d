"""What a checkpoint records about its arrays (path, shape, dtype, checksum in the step's meta) and the checks
against it: a corrupt array, restore targets of another layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from jaxtyping import PyTree

from nanocode.core.checksums import array_checksums, is_array
from nanocode.core.errors import CorruptCheckpoint, first_line

ARRAYS_KEY = "array_checksums"  # the meta entry: {path: {"shape", "dtype", "checksum"}}


def array_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """(path, array) of every array in a state tree; the path joins the key names ('params/wi/value'), the same
    for a live nnx State, a TrainState dataclass, abstract targets and the nested dicts orbax restores untargeted."""
    return [
        ("/".join(_key_name(k) for k in path), x)
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
    ]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _same_layout(x: Any, saved: Mapping[str, Any] | None) -> bool:
    """Whether an array can be compared with its record: same shape and dtype (a restore may cast on purpose)."""
    return saved is not None and list(x.shape) == list(saved["shape"]) and str(x.dtype) == saved["dtype"]


def saved_layout(targets: PyTree, record: Mapping[str, Any]) -> bool:
    """The restore targets are exactly the saved arrays (paths and shapes)."""
    leaves = array_leaves(targets)
    return len(leaves) == len(record) and all(
        p in record and list(x.shape) == list(record[p]["shape"]) for p, x in leaves
    )


def verify_arrays(step_dir: str | Path, tree: PyTree) -> None:
    """Check arrays read from step directory `step_dir` by another route (e.g. a partial restore of only the
    `params`, rooted as saved: `{"params": ...}`) against the checksums saved in its meta; CorruptCheckpoint on a
    mismatch or an unreadable meta. A step without a meta or without checksums (saved before them) is not checked."""
    step_dir = Path(step_dir)
    path = mismatch(tree, _saved_arrays(step_dir))
    if path is not None:
        raise CorruptCheckpoint(
            f"checkpoint {step_dir}: array {path} does not match its saved checksum ({step_dir / 'state'} is corrupt)"
        )


def layout_mismatch(step_dir: str | Path, targets: PyTree) -> str | None:
    """Why restore `targets` (rooted as saved, e.g. `{"params": ...}`) cannot be read from step directory
    `step_dir`: the first array the checkpoint lacks or saved with another shape; None when they fit or the step
    records no arrays. Checked before reading, because a read that fails part-way leaves tensorstore reads
    running that print tracebacks after the caller's error."""
    record = _saved_arrays(Path(step_dir))
    if not record:
        return None
    for path, x in array_leaves(targets):
        saved = record.get(path)
        if saved is None:
            return f"the checkpoint has no parameter {path}"
        if list(x.shape) != list(saved["shape"]):
            return f"{path} is saved with shape {tuple(saved['shape'])}, the model wants {tuple(x.shape)}"
    return None


def _saved_arrays(step_dir: Path) -> Mapping[str, Any] | None:
    """The per-array record (shape, dtype, checksum) in a step's meta; None for a step saved without one."""
    meta_file = step_dir / "meta" / "metadata"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{meta_file}: unreadable ({type(e).__name__}: {first_line(e)})") from None
    return meta.get(ARRAYS_KEY) if isinstance(meta, dict) else None


def mismatch(tree: PyTree, record: Mapping[str, Any] | None) -> str | None:
    """The path of the first array whose checksum differs from its record (arrays without one are not checked:
    a checkpoint from before checksums were recorded, or a restore that casts)."""
    if not record:
        return None
    leaves = [(p, x) for p, x in array_leaves(tree) if is_array(x) and _same_layout(x, record.get(p))]
    for (path, _), got in zip(leaves, array_checksums(x for _, x in leaves), strict=True):
        if got != record[path]["checksum"]:
            return path
    return None
