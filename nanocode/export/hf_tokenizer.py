"""Our BPE tokenizer as a Hugging Face `tokenizers` tokenizer.json that encodes every text to the same ids.

tiktoken's BPE with our ranks, restated the way Hugging Face's byte-level BPE reads it (transformers'
TikTokenConverter does the same for Llama 3):

  vocab     each token's bytes through GPT-2's bytes->unicode map, at its rank
  merges    for each token, every split into two tokens of the vocab, ordered by the merged token's rank
  ignore_merges   a pre-token that is itself a token is taken whole, as tiktoken does before merging
  pre-tokenizer   our split regex (isolated pieces), then the byte-level map (no prefix space, no regex of its own)
  specials  the 11 special tokens at their ids, matched in text before splitting (tiktoken's allowed_special="all")

The chat tokens (bos, user/assistant start and end) are `special`: decoding with skip_special_tokens drops them. The
tool-call and tool-result tokens are not: they are the structure a client parses a tool call from, so they stay in
decoded text (as Qwen's <tool_call> does), and vLLM's default decoding keeps them. Encoding adds <|bos|> in front
(the post-processor), as our pretraining documents start; `add_special_tokens=False` leaves it out.

One difference cannot be written into a tokenizer.json: it matches the special-token strings in all text, so text that
holds them (nanocode's tool lines in a system prompt) gets the special ids, where our codec encodes message text as
plain text. A chat template only produces text, so the structure tokens must be matched there.
"""

from __future__ import annotations

from pathlib import Path

from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import SPECIAL_TOKENS
from nanocode.data.tokenizer import RANKS_FILE, BPETokenizer, ranks_from_bytes

# What a client reads a tool call or result from: kept in decoded text.
STRUCTURE_TOKENS = frozenset(t for t in SPECIAL_TOKENS if t.startswith("<|tool_"))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what byte-level BPE vocabularies are written in)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level vocab and the ordered merge list equivalent to tiktoken's rank-ordered merging."""
    byte_char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(text(left), text(right)) for *_, left, right in merges]


def load_ranks(tokenizer_dir: str | Path) -> tuple[BPETokenizer, dict[bytes, int]]:
    """The saved tokenizer (checked by BPETokenizer.load: checksum, specials) and its mergeable ranks."""
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = BPETokenizer.load(tokenizer_dir)
    return tokenizer, ranks_from_bytes((tokenizer_dir / RANKS_FILE).read_bytes(), tokenizer_dir / RANKS_FILE)


def hf_tokenizer(tokenizer: BPETokenizer, ranks: dict[bytes, int]):
    """A `tokenizers.Tokenizer` giving `tokenizer`'s ids for every text (the module docstring says how)."""
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        raise ConfigError("export --format hf needs the `tokenizers` package: pip install 'nanocode[export]'") from None

    vocab, merges = vocab_and_merges(ranks)
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    for token in SPECIAL_TOKENS:  # in id order: each takes the next free id, as ours follow the ranks
        if token in STRUCTURE_TOKENS:
            hf.add_tokens([AddedToken(token, special=False, normalized=False)])
        else:  # add_special_tokens marks a token special whatever its AddedToken says
            hf.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    for token, id_ in tokenizer.special_tokens.items():
        if hf.token_to_id(token) != id_:
            raise ConfigError(f"special token {token} landed at id {hf.token_to_id(token)}, not {id_}")
    bos = SPECIAL_TOKENS[0]
    hf.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.bos_id)]
    )
    return hf
