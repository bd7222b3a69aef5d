"""Parameter groups by path: which optimizer (and which learning rate) each parameter gets.

Labels, for `optax.partition` (a.k.a. multi_transform):
  'embedding'  a path component named `wte` (the token embedding)        -> AdamW at the embedding LR
  'head'       a path component named `lm_head` (the unembedding)        -> AdamW at the head LR
  'muon'       every other matrix (attention and MLP projections)        -> Muon
               2-D, or a stack of them ([layers, in, out] with GPTConfig.scan_layers): each orthogonalised on its own
  'other'      anything else (gains, biases, scalars)                    -> AdamW
Works on an `nnx.State` (Variables or plain arrays), a plain dict, and abstract `jax.ShapeDtypeStruct` leaves. Only
path names and shapes are read, so this module knows nothing of the model classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

EMBEDDING, HEAD, MUON, OTHER = "embedding", "head", "muon", "other"
LABELS = (EMBEDDING, HEAD, MUON, OTHER)


def _is_param(x: Any) -> bool:
    # Stop at nnx Variables so an nnx.State of Variables and its pure-array twin get labels at the same places
    # (the labels tree is then a prefix of the params tree, which optax.masked accepts).
    return isinstance(x, nnx.Variable)


def key_name(key: Any) -> str:
    """One path entry as text: dict keys, attribute names and list indices."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    return tuple(key_name(k) for k in path)


def path_str(path: Sequence[Any]) -> str:
    """'blocks/0/attn/c_q/kernel' (for messages and logs)."""
    return "/".join(path_names(path))


def label_of(
    path: Sequence[Any],
    shape: Sequence[int],
    *,
    embedding: Sequence[str] = ("wte",),
    head: Sequence[str] = ("lm_head",),
) -> str:
    names = set(path_names(path))
    if names & set(embedding):
        return EMBEDDING
    if names & set(head):
        return HEAD
    return MUON if len(shape) >= 2 else OTHER  # Newton–Schulz batches over leading axes (stacked layers)


def label_params(params: Any, *, embedding: Sequence[str] = ("wte",), head: Sequence[str] = ("lm_head",)) -> Any:
    """A pytree of labels shaped like `params` (one string per parameter), for `optax.partition`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: label_of(path, x.shape, embedding=embedding, head=head), params, is_leaf=_is_param
    )


def labelled_leaves(params: Any, **names: Sequence[str]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(path, label, shape) of every parameter, in tree order: for logs and for reading shapes (d_model)."""
    leaves = jax.tree_util.tree_leaves_with_path(params, is_leaf=_is_param)
    return [(path_str(p), label_of(p, x.shape, **names), tuple(x.shape)) for p, x in leaves]
