"""The BPE tokenizer: trained with rustbpe, run with tiktoken (fully offline, from our own ranks).

Ids: 0..255 are the raw bytes, then the learned merges, then the 11 special tokens of `SPECIAL_TOKENS` at
`len(ranks) + index`, so `vocab_size` counts every id. A tokenizer directory holds:

  tokenizer.tiktoken   the mergeable ranks, tiktoken's format (one `base64(token) rank` line per id)
  tokenizer.json       pattern, vocab_size, special tokens and the sha256 of tokenizer.tiktoken
  token_bytes.npy      int32[vocab_size]: UTF-8 bytes of each token, 0 for special tokens (for bits per byte)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tiktoken
from jaxtyping import Int32

from nanocode.core.errors import DataError
from nanocode.core.interfaces import SPECIAL_TOKENS, Tokenizer
from nanocode.core.io import write_bytes, write_json
from nanocode.core.kinds import TOKENIZERS

# GPT-4's split pattern with numbers grouped by at most 2 digits (nanochat measured {1,2} best at 32K vocab).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"
TOKEN_BYTES_FILE = "token_bytes.npy"


def ranks_to_bytes(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's ranks format: `base64(token) rank` per line, in id order."""
    return b"".join(base64.b64encode(tok) + b" %d\n" % rank for tok, rank in sorted(ranks.items(), key=lambda x: x[1]))


def ranks_from_bytes(data: bytes, where: Path) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(data.splitlines(), 1):
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise DataError(f"{where}:{n}: not a `base64 rank` line") from None
    return ranks


@TOKENIZERS.register("bpe")
class BPETokenizer(Tokenizer):
    """Byte-level BPE with GPT-4-style pre-splitting (rustbpe to train, tiktoken to encode)."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN):
        n = len(mergeable_ranks)
        if sorted(mergeable_ranks.values()) != list(range(n)) or any(
            bytes([b]) not in mergeable_ranks for b in range(256)
        ):
            raise ValueError(f"mergeable ranks must be the ids 0..{n - 1} and include all 256 single bytes")
        self._ranks = dict(mergeable_ranks)
        self._pattern = pattern
        self._special = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._enc = tiktoken.Encoding(
            name=f"nanocode_bpe_{self.vocab_size}",
            pat_str=pattern,
            mergeable_ranks=self._ranks,
            special_tokens=self._special,
            explicit_n_vocab=n + len(SPECIAL_TOKENS),
        )

    def __reduce__(self):  # pickle (data-loader workers) by ranks and pattern; tiktoken rebuilds itself
        return (type(self), (self._ranks, self._pattern))

    # -- training -----------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, pattern: str = SPLIT_PATTERN) -> BPETokenizer:
        """Learn `vocab_size - 256 - len(SPECIAL_TOKENS)` merges from `texts` (streamed; rustbpe splits in parallel)."""
        import rustbpe  # only training needs it

        n_ranks = vocab_size - len(SPECIAL_TOKENS)
        if n_ranks < 256:
            raise ValueError(f"vocab_size {vocab_size} is too small: need 256 bytes + {len(SPECIAL_TOKENS)} specials")
        chars = 0

        def counted():
            nonlocal chars
            for text in texts:
                chars += len(text)
                yield text

        bpe = rustbpe.Tokenizer()
        bpe.train_from_iterator(counted(), n_ranks, pattern=pattern)
        ranks = {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}
        if len(ranks) != n_ranks:  # rustbpe stops early when no pair is left to merge
            raise DataError(
                f"only {len(ranks) - 256} of {n_ranks - 256} merges could be learned from {chars} chars of text; "
                "train on more text or ask for a smaller vocab_size"
            )
        return cls(ranks, pattern)

    # -- the Tokenizer interface --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._ranks) + len(SPECIAL_TOKENS)

    @property
    def pattern(self) -> str:
        return self._pattern

    def encode(self, text: str, *, bos: bool = False, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """`allowed_special` names the special tokens to recognise in `text` ("all" for every one); any other
        special-token string is encoded as the plain text it is."""
        allowed = set(self._special) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self._special)
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {', '.join(sorted(unknown))}")
        ids = self._enc.encode(text, allowed_special=allowed, disallowed_special=())
        return [self.bos_id, *ids] if bos else ids

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False) -> list[list[int]]:
        batch = self._enc.encode_ordinary_batch(list(texts), num_threads=os.cpu_count() or 1)
        if bos:
            for ids in batch:
                ids.insert(0, self.bos_id)
        return batch

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))

    def special_id(self, token: str) -> int:
        try:
            return self._special[token]
        except KeyError:
            raise KeyError(f"{token!r} is not a special token (known: {', '.join(SPECIAL_TOKENS)})") from None

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def token_bytes(self) -> Int32[np.ndarray, " v"]:
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for tok, rank in self._ranks.items():
            out[rank] = len(tok)
        return out

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the three files, each atomically; the meta (holding the ranks' checksum) goes last, so a crash
        midway leaves a directory that `load` rejects instead of a silently mismatched one."""
        directory = Path(directory)
        ranks = ranks_to_bytes(self._ranks)
        write_bytes(directory / RANKS_FILE, ranks)
        buf = io.BytesIO()
        np.save(buf, self.token_bytes())
        write_bytes(directory / TOKEN_BYTES_FILE, buf.getvalue())
        write_json(
            directory / META_FILE,
            {
                "kind": "bpe",
                "pattern": self._pattern,
                "vocab_size": self.vocab_size,
                "special_tokens": self._special,
                "ranks_file": RANKS_FILE,
                "ranks_sha256": hashlib.sha256(ranks).hexdigest(),
            },
        )

    @classmethod
    def load(cls, directory: str | Path, expected_vocab_size: int | None = None) -> BPETokenizer:
        """Load a saved tokenizer; every problem is a one-line DataError naming the file at fault."""
        directory = Path(directory)
        meta_path, ranks_path = directory / META_FILE, directory / RANKS_FILE
        if not directory.is_dir():
            raise DataError(f"{directory}: no tokenizer directory (run `nanocode tok-train` first)")
        for path in (meta_path, ranks_path):
            if not path.is_file():
                raise DataError(f"{path}: missing (incomplete tokenizer directory; rerun `nanocode tok-train`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}:{e.lineno}: not JSON ({e.msg})") from None
        except ValueError as e:  # not UTF-8
            raise DataError(f"{meta_path}: unreadable tokenizer meta ({type(e).__name__}: {e})") from None
        try:
            pattern, vocab_size, special, checksum = (
                meta["pattern"],
                int(meta["vocab_size"]),
                meta["special_tokens"],
                meta["ranks_sha256"],
            )
            if not isinstance(pattern, str) or not isinstance(checksum, str) or not isinstance(special, dict):
                raise TypeError("pattern and ranks_sha256 must be strings, special_tokens an object")
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{meta_path}: unreadable tokenizer meta ({type(e).__name__}: {e})") from None
        if expected_vocab_size is not None and vocab_size != expected_vocab_size:
            raise DataError(
                f"{meta_path}: vocab_size {vocab_size} but the experiment expects {expected_vocab_size} "
                "(tokenizer directory from another vocab?)"
            )
        data = ranks_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != checksum:
            raise DataError(f"{ranks_path}: corrupt (sha256 differs from the one in {META_FILE}); rerun tok-train")
        try:
            tokenizer = cls(ranks_from_bytes(data, ranks_path), pattern)
        except ValueError as e:  # ranks that are not 0..n-1 with every byte, or a pattern tiktoken rejects
            raise DataError(f"{directory}: not a usable tokenizer ({' '.join(str(e).split())})") from None
        if tokenizer.vocab_size != vocab_size or tokenizer.special_tokens != special:
            raise DataError(
                f"{meta_path}: vocab_size/special tokens do not match {RANKS_FILE} and nanocode's SPECIAL_TOKENS"
            )
        return tokenizer

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
