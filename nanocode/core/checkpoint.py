"""Checkpoints: one orbax step directory holding the train state, the data position and what the run was.

Each step is a Composite of three items:
- `state`: the pytree of jax arrays (model params, optimizer state, rng), written shard by shard from every process;
- `data`:  the data iterator's position, a small JSON dict (resume continues with the next unseen batch);
- `meta`:  JSON: step, the resolved gin config, tokenizer and data-spec fingerprints, mesh shape, nanocode version.

Restores go straight into the shardings of the *current* mesh (orbax reads only the slices each device needs), so a
run saved on an 8-way FSDP mesh resumes on a (2, 2, 2) mesh. Orbax writes a step into a temporary directory and
renames it when complete; `latest_step` additionally requires the commit record, so a save that was killed
half-way is never resumed from. Every array's checksum (`nanocode.core.checksums`: independent of the sharding) and
one of the data position go into `meta`, which carries its own; `restore` compares them, so a flipped byte is a
one-line CorruptCheckpoint naming the step, not silently wrong weights. `restore()` of the latest step (a resume)
moves a corrupt step aside (`<step>.corrupt`, nothing is deleted) with a printed warning and falls back to the
previous complete one. Saves are asynchronous: the arrays are copied to host memory before `save` returns
(the caller may donate them to the next step at once), the files are written in the background; call `wait()`
before the process exits.

    ckpt = Checkpointer(workspace.checkpoint_dir("base"), max_to_keep=3)
    if (step := ckpt.latest_step()) is not None:  # check_compatible: nanocode.core.resume_check
        check_compatible(ckpt.read_meta(step), make_meta(config=..., tokenizer=..., data_spec=...), force=args.force)
        restored = ckpt.restore(step, abstract_state=nnx.state(model))   # the live arrays give the target shardings
    with PreemptionGuard() as guard:  # nanocode.core.preemption
        for step in ...:
            ...
            if step % save_every == 0 or guard.should_stop(step):
                ckpt.save(step, state, data=loader.state(), meta=meta)
            if guard.should_stop(step):
                break
    ckpt.wait()
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts  # orbax's storage layer (its dependency): the reads a failed restore abandons
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from nanocode import __version__
from nanocode.core import mesh as mesh_lib
from nanocode.core.checksums import array_checksums
from nanocode.core.errors import CheckpointError, CorruptCheckpoint, first_line
from nanocode.core.saved_arrays import ARRAYS_KEY, array_leaves, mismatch, saved_layout

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")
COMMIT_FILE = "_CHECKPOINT_METADATA"  # orbax writes it into a step when the step is finalised
# Integrity records written into meta: per-array checksums, the data position's fingerprint, meta's own.
DATA_KEY, META_KEY = "data_checksum", "meta_checksum"


def fingerprint(obj: Any) -> str:
    """A short stable hash of bytes, text or anything JSON-serialisable (sorted keys)."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode()
    else:
        data = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def make_meta(
    *, config: str, tokenizer: str, data_spec: str, mesh: Mesh | Mapping[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    """The meta record of a run: resolved gin config text, tokenizer and data-spec fingerprints, mesh shape."""
    mesh_shape = {str(a): int(n) for a, n in (mesh.shape if isinstance(mesh, Mesh) else mesh or {}).items()}
    return {"config": config, "tokenizer": tokenizer, "data_spec": data_spec, "mesh_shape": mesh_shape, **extra}


@dataclass(frozen=True)
class Restored:
    step: int
    state: Any
    data: dict[str, Any]
    meta: dict[str, Any]


class Checkpointer:
    """Saves and restores (state, data position, meta) per step under one directory, keeping the latest K."""

    def __init__(self, directory: str | Path, *, max_to_keep: int | None = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep) if max_to_keep else None,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a save that was killed half-way
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    # -- what is on disk ------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps whose save completed, oldest first (an in-flight async save is not listed until it commits)."""
        return complete_steps(self.directory)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The meta record of a step (default: the latest complete one), without reading the arrays."""
        step = self._complete_step(step)
        return self._read_meta(step)

    def _read_meta(self, step: int) -> dict[str, Any]:
        meta = self._restore_items(step, corrupt=True, meta=ocp.args.JsonRestore())["meta"]
        if not isinstance(meta, dict):
            raise CorruptCheckpoint(f"checkpoint step {step}: {self._file(step, 'meta', 'metadata')} is not a record")
        saved = meta.get(META_KEY)
        if saved is not None and fingerprint({k: v for k, v in meta.items() if k != META_KEY}) != saved:
            raise CorruptCheckpoint(
                f"checkpoint step {step}: {self._file(step, 'meta', 'metadata')} does not match its checksum (corrupt)"
            )
        return meta

    # -- save / restore -------------------------------------------------------------------------------------------
    def save(
        self, step: int, state: PyTree, *, data: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None
    ) -> bool:
        """Start saving `step` (returns once arrays are on the host); False if that step is already saved."""
        step = int(step)
        path = self.directory / str(step)
        if path.exists():
            if _is_complete(path):
                return False  # e.g. a preemption save right after the periodic save of the same step
            raise CheckpointError(f"checkpoint {path} exists but is incomplete; delete it to save step {step} again")
        if step in self._manager.all_steps():  # this run's async save of it is still being written
            return False
        data = _jsonable(dict(data or {}), "data state")
        meta = _jsonable({**(meta or {}), "step": step, "nanocode_version": __version__}, "meta")
        leaves = array_leaves(state)
        sums = array_checksums(x for _, x in leaves)  # before returning: the caller may donate the arrays next
        meta[ARRAYS_KEY] = {
            path: {"checksum": c, "shape": list(x.shape), "dtype": str(x.dtype)}
            for (path, x), c in zip(leaves, sums, strict=True)
        }
        meta[DATA_KEY] = fingerprint(data)
        meta[META_KEY] = fingerprint(meta)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta)
        )
        try:
            return bool(self._manager.save(step, args=args, force=True))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"saving step {step} to {self.directory}: {first_line(e)}") from e

    def restore(
        self,
        step: int | None = None,
        abstract_state: PyTree | None = None,
        *,
        mesh: Mesh | None = None,
        check: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Restored:
        """Restore a step into the shardings that `abstract_state` carries, verifying every checksum.

        `abstract_state` may hold live arrays (their shardings are the targets), or ShapeDtypeStructs with a sharding
        (`mesh.with_shardings(...)`), or logical nnx Variables (`mesh.logical_state(...)`, resolved through the
        rules); see `restore_targets`. Without it the arrays come back as they were saved (same devices only).
        `check(meta)` runs on the step's meta before any array is read (e.g. `check_compatible`); what it raises
        propagates. With step=None (a resume) a corrupt latest step is moved aside with a printed warning and the
        previous complete step is restored instead; a given step that is corrupt raises CorruptCheckpoint.
        """
        targets = None if abstract_state is None else restore_targets(abstract_state, mesh)
        if step is not None:
            return self._restore_step(self._complete_step(step), targets, check)
        self._set_aside_unreadable_commits()
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        for i in reversed(range(len(steps))):
            try:
                return self._restore_step(steps[i], targets, check)
            except CorruptCheckpoint as e:
                if i == 0:
                    raise
                moved = self._set_aside(steps[i])
                _warn(f"{e}; moved it to {moved}, resuming from step {steps[i - 1]} instead")
        raise AssertionError("unreachable")

    def _restore_step(self, step: int, targets: PyTree | None, check: Callable | None) -> Restored:
        meta = self._read_meta(step)
        if check is not None:
            check(meta)
        record = meta.get(ARRAYS_KEY) or {}
        # A read error is corruption only when the target is what was saved (else it is the caller's mismatch).
        fits = bool(record) and (targets is None or saved_layout(targets, record))
        state_args = ocp.args.StandardRestore(targets) if targets is not None else ocp.args.StandardRestore()
        items = self._restore_items(step, corrupt=fits, state=state_args, data=ocp.args.JsonRestore())
        data = items["data"] if items["data"] is not None else {}
        if DATA_KEY in meta and fingerprint(data) != meta[DATA_KEY]:
            raise CorruptCheckpoint(
                f"checkpoint step {step}: {self._file(step, 'data', 'metadata')} does not match its checksum (corrupt)"
            )
        self._verify_arrays(step, items["state"], record)
        return Restored(step=step, state=items["state"], data=dict(data), meta=meta)

    def _verify_arrays(self, step: int, state: PyTree, record: Mapping[str, Any]) -> None:
        path = mismatch(state, record)
        if path is not None:
            raise CorruptCheckpoint(
                f"checkpoint step {step}: array {path} does not match its saved checksum "
                f"({self._file(step, 'state')} is corrupt)"
            )

    def _complete_step(self, step: int | None) -> int:
        steps = self.steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no complete checkpoint in {self.directory}")
            return steps[-1]
        if int(step) not in steps:
            complete = ", ".join(map(str, steps)) or "none"
            raise CheckpointError(f"no complete checkpoint for step {step} in {self.directory} (complete: {complete})")
        return int(step)

    def _restore_items(self, step: int, *, corrupt: bool, **items: Any) -> Any:
        try:
            with _abandoned_reads_kept_quiet():
                return self._manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointError:
            raise
        except Exception as e:  # orbax/tensorstore raise many types, with multi-line messages
            kind = CorruptCheckpoint if corrupt else CheckpointError
            raise kind(f"restoring step {step} from {self._file(step)}: {type(e).__name__}: {first_line(e)}") from None

    def _file(self, step: int, *parts: str) -> Path:
        return self.directory.joinpath(str(step), *parts)

    # -- corrupt steps are moved aside, never deleted -------------------------------------------------------------
    def _set_aside(self, step: int) -> Path:
        """Rename a step directory to `<step>.corrupt` (not a step name: listings and orbax ignore it), so the
        resumed run can save that step again; every process then sees the same steps."""
        source = self._file(step)
        target = source.with_name(f"{step}.corrupt")
        n = 1
        while target.exists():
            target, n = source.with_name(f"{step}.corrupt.{n}"), n + 1
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"nanocode_set_aside_{step}")
        self._manager.reload()
        return target

    def _set_aside_unreadable_commits(self) -> None:
        """Steps newer than the latest complete one whose commit record is not JSON: a resume would save them
        again and find the directory taken, so they go aside too (with a warning)."""
        steps = self.steps()
        latest = steps[-1] if steps else -1
        for step in unreadable_commits(self.directory):
            if step > latest:
                moved = self._set_aside(step)
                _warn(f"checkpoint step {step}: its commit record {COMMIT_FILE} is unreadable; moved it to {moved}")

    # -- preemption and shutdown ----------------------------------------------------------------------------------
    def reached_preemption(self, step: int) -> bool:
        """True at the step every process agreed to save at after a preemption notice (multi-process runs)."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        """Block until the in-flight async save is on disk (call before exiting, and before reading it back)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()  # an async save still in flight completes before the manager goes
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _commit_record(path: Path) -> dict | None:
    """A step's commit record; None when absent; raises ValueError when present but not a JSON object."""
    try:
        text = (path / COMMIT_FILE).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from e
    record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"{COMMIT_FILE} is not a JSON object")
    return record


def _is_complete(path: Path) -> bool:
    """A finalised orbax step: its commit record carries a commit time and every item directory is there."""
    try:
        record = _commit_record(path)
    except ValueError:
        return False
    return bool(record and record.get("commit_timestamp_nsecs")) and all((path / item).is_dir() for item in ITEMS)


def unreadable_commits(directory: str | Path) -> list[int]:
    """Step directories whose commit record exists but is not JSON (a corrupt file, not a save in progress)."""
    directory = Path(directory)
    out = []
    for p in directory.iterdir() if directory.is_dir() else ():
        if p.name.isdigit():
            try:
                _commit_record(p)
            except ValueError:
                out.append(int(p.name))
    return sorted(out)


@contextlib.contextmanager
def _abandoned_reads_kept_quiet() -> Iterator[None]:
    """A failed orbax restore abandons the reads of the other shards: tensorstore reads whose completion calls back
    into the restore's event loop, closed by then ("Event loop is closed", printed from a tensorstore thread at any
    later moment), and suspended coroutines that print a traceback when garbage collected. The first is dropped
    while restoring; after a failure the reads still pending are cancelled and the coroutines collected, quietly,
    so the caller's one-line error is all that is printed."""
    previous = sys.unraisablehook
    others = _pending_reads_and_writes()  # an async save's writes, say: never cancelled

    def drop_closed_loop_callbacks(unraisable: Any) -> None:
        if not _closed_loop(unraisable.exc_value):
            previous(unraisable)

    sys.unraisablehook = drop_closed_loop_callbacks
    try:
        yield
    except BaseException:
        sys.unraisablehook = lambda unraisable: None
        kept = {id(f) for f in others}
        for read in _pending_reads_and_writes():
            if id(read) not in kept:
                read.cancel()
        gc.collect()
        raise
    finally:
        sys.unraisablehook = previous


def _pending_reads_and_writes() -> list[ts.Future]:
    return [o for o in gc.get_objects() if isinstance(o, ts.Future) and not o.done()]


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _warn(text: str) -> None:
    """A resume that skips a corrupt step says so on stderr, whatever the logging setup."""
    if jax.process_index() == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def complete_steps(directory: str | Path) -> list[int]:
    """The complete steps under a checkpoint directory, oldest first — read-only, for readers of another run.

    (Readers must not open a Checkpointer on a directory a training run is writing: creating its CheckpointManager
    deletes temporary directories, which destroys a save in flight.)"""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and _is_complete(p))


def restore_targets(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """ShapeDtypeStructs with concrete shardings for every array of a (live, abstract or logical) state tree.

    A leaf keeps the sharding it has (a live array's, or an abstract-mesh one bound to `mesh`); an nnx Variable
    without one gets the sharding of its logical axis names under the active (or default) rules; any other
    unsharded leaf is replicated. `mesh` defaults to the one `mesh.activate` made current.
    """
    mesh = mesh or _current_mesh()

    def need_mesh(what: str) -> Mesh:
        if mesh is None:
            raise CheckpointError(
                f"restore target {what} has no concrete sharding: pass mesh= or restore under mesh.activate"
            )
        return mesh

    def target(x, logical=None):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            return x
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and not isinstance(sharding.mesh, Mesh):  # an AbstractMesh
            sharding = NamedSharding(need_mesh(str(x)), sharding.spec)
        elif sharding is None and logical:
            m = need_mesh(str(x))
            sharding = NamedSharding(m, mesh_lib.logical_to_spec(logical, mesh_lib.current_rules(m, None)))
        elif sharding is None:
            sharding = NamedSharding(need_mesh(str(x)), PartitionSpec())
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    def leaf(x):
        if isinstance(x, nnx.Variable):
            return x.replace(target(x.get_value(), x.get_metadata().get("out_sharding")))
        return target(x)

    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _current_mesh() -> Mesh | None:
    mesh = jax.sharding.get_mesh()
    return mesh if isinstance(mesh, Mesh) and not mesh.empty else None


# ------------------------------------------------------------------------------------------------ helpers
def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _jsonable(obj: Any, what: str) -> Any:
    """Round-trip through JSON now, so a bad value fails here in one line rather than in orbax's writer thread."""
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {what} is not JSON: {e}") from e
