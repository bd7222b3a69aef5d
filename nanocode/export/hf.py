"""A nanocode GPT as a Hugging Face transformers `NanoChatForCausalLM` directory (`nanocode export --format hf`).

transformers' NanoChat is nanochat's architecture, which is ours: parameter-free RMSNorm (eps 1e-6) after the
embedding, before each attention and MLP and at the end; RoPE on split halves rotated by -theta (its rotate_half is
[x2, -x1]) then QK-norm; ReLU^2 MLP; no biases; grouped-query attention; an untied head; tanh soft-capped logits. So the
export is renames and transposes: our matrices are stored (in, out), torch's Linear keeps (out, in).

    ours                         transformers                                 shape there
    wte                          model.embed_tokens.weight                    [vocab, embd]        (as is)
    blocks/<i>/attn/c_q|c_k|c_v  model.layers.<i>.self_attn.q|k|v_proj.weight  [heads * head_dim, embd]   (.T)
    blocks/<i>/attn/c_proj       model.layers.<i>.self_attn.o_proj.weight     [embd, n_head * head_dim] (.T)
    blocks/<i>/mlp/c_fc          model.layers.<i>.mlp.fc1.weight              [mlp_ratio * embd, embd]  (.T)
    blocks/<i>/mlp/c_proj        model.layers.<i>.mlp.fc2.weight              [embd, mlp_ratio * embd]  (.T)
    lm_head                      lm_head.weight                               [vocab, embd]        (.T)

Weights are written in fp32 (our master copies); `dtype` in config.json is the compute dtype the model trained in.
Only the stock `gpt` model exports: a fork with another block, MLP or attention, or a config field this mapping does
not know, is refused with one line naming it, since transformers would load it and silently compute something else.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from nanocode.core.errors import ConfigError
from nanocode.core.io import atomic_dir, write_json, write_text
from nanocode.export.chat_template import chat_template
from nanocode.export.hf_tokenizer import hf_tokenizer, load_ranks
from nanocode.models import gpt, scan

# GPTConfig fields and their config.json keys (computed in hf_config); fields left out on purpose: how we compute,
# not what (transformers chooses its own attention kernel; the weights are written unstacked either way).
MAPPED_FIELDS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_ratio", "softcap")
MAPPED_FIELDS += ("rope_base", "compute_dtype")
IMPLEMENTATION_FIELDS = ("attention", "scan_layers")

# transformers' names for a block's matrices (each transposed: stored (in, out) here, (out, in) there).
LAYER_NAMES = {
    ("attn", "c_q"): "self_attn.q_proj.weight",
    ("attn", "c_k"): "self_attn.k_proj.weight",
    ("attn", "c_v"): "self_attn.v_proj.weight",
    ("attn", "c_proj"): "self_attn.o_proj.weight",
    ("mlp", "c_fc"): "mlp.fc1.weight",
    ("mlp", "c_proj"): "mlp.fc2.weight",
}
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def check_exportable(model_class: type, config: Any) -> None:
    """Refuse (one line) a model transformers' NanoChat would not compute the same way."""
    block = getattr(model_class, "block_class", None)
    parts = {  # innermost first, so a fork is refused by the part it changes
        "mlp_class": (getattr(block, "mlp_class", None), gpt.MLP),
        "attention_class": (getattr(block, "attention_class", None), gpt.CausalSelfAttention),
        "block_class": (block, gpt.Block),
        "model class": (model_class, gpt.GPT),
    }
    for what, (have, want) in parts.items():
        if have is not want:
            raise ConfigError(
                f"{what} {getattr(have, '__qualname__', have)} has no transformers NanoChat counterpart "
                f"(NanoChatForCausalLM is the stock nanocode GPT: {want.__qualname__})"
            )
    if not isinstance(config, gpt.GPTConfig):
        raise ConfigError(f"model config {type(config).__qualname__} is not a GPTConfig")
    for f in dataclasses.fields(config):
        if f.name not in MAPPED_FIELDS + IMPLEMENTATION_FIELDS:
            raise ConfigError(f"GPTConfig.{f.name} has no transformers NanoChat counterpart")


def rms_norm_eps() -> float:
    """The eps our norms use (the default of gpt.rms_norm, which every call site keeps)."""
    return float(inspect.signature(gpt.rms_norm).parameters["eps"].default)


def hf_config(config: gpt.GPTConfig, special: dict[str, int]) -> dict[str, Any]:
    """config.json: every GPTConfig field of MAPPED_FIELDS, and transformers' fixed choices that are ours."""
    return {
        "architectures": ["NanoChatForCausalLM"],
        "model_type": "nanochat",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_ratio * config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.sequence_len,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
        "final_logit_softcapping": config.softcap,
        "dtype": config.compute_dtype,
        "hidden_act": "relu2",
        "rms_norm_eps": rms_norm_eps(),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": special["<|bos|>"],
        "eos_token_id": special["<|assistant_end|>"],
        "pad_token_id": special["<|assistant_end|>"],
    }


def hf_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """transformers' state dict (the module docstring's table) as contiguous fp32 numpy arrays."""
    state = scan.unstack_blocks(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    c: gpt.GPTConfig = model.config

    def array(x) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32))

    expected = {"wte", "lm_head", "blocks"}
    if set(state) != expected:
        raise ConfigError(f"parameters {sorted(set(state) - expected)} have no transformers NanoChat counterpart")
    out = {"model.embed_tokens.weight": array(state["wte"]), "lm_head.weight": array(np.asarray(state["lm_head"]).T)}
    for i in range(c.n_layer):
        block = state["blocks"][i]
        have = {(part, name) for part in block for name in block[part]}
        if have != set(LAYER_NAMES):
            extra = sorted("/".join(p) for p in have - set(LAYER_NAMES))
            raise ConfigError(f"block parameters {extra} have no transformers NanoChat counterpart")
        for (part, name), hf_name in LAYER_NAMES.items():
            out[f"model.layers.{i}.{hf_name}"] = array(np.asarray(block[part][name]).T)
    return out


def generation_config(special: dict[str, int]) -> dict[str, Any]:
    """Stop at the end of the assistant turn, or at <|bos|> (a new document: the base model's end)."""
    return {
        "bos_token_id": special["<|bos|>"],
        "eos_token_id": [special["<|assistant_end|>"], special["<|bos|>"]],
        "pad_token_id": special["<|assistant_end|>"],
    }


def tokenizer_config(template: str, max_len: int) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|assistant_end|>",
        "pad_token": "<|assistant_end|>",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": template,
    }


def check_out(out: str | Path) -> None:
    """`out` may be absent, empty, or an earlier export holding only FILES (replaced whole); refuse anything else
    rather than overwrite it."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory (choose a new or empty --out)")
    others = sorted(p.name for p in out.iterdir() if p.name not in FILES)
    if others:
        raise ConfigError(
            f"{out}: holds {', '.join(others[:3])}, not only an earlier export (choose a new or empty --out)"
        )


def export_hf(
    model: nnx.Module,
    tokenizer_dir: str | Path,
    out: str | Path,
    *,
    tools_head: str | None = None,
    tool_example: str | None = None,
) -> list[Path]:
    """Write the transformers directory `out` (FILES; see check_out) and return their paths. It is built beside `out`
    and renamed into place, so a failure leaves no half-written export."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ConfigError(
            "export --format hf needs the `safetensors` package: pip install 'nanocode[export]'"
        ) from None
    check_exportable(type(model), model.config)
    check_out(out)
    out = Path(out)
    tokenizer, ranks = load_ranks(tokenizer_dir)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError(
            f"{tokenizer_dir}: the tokenizer has {tokenizer.vocab_size} ids, the model {model.config.vocab_size}"
        )
    special = tokenizer.special_tokens
    hf_tok = hf_tokenizer(tokenizer, ranks)
    weights = hf_weights(model)
    template = chat_template(tools_head, tool_example)
    with atomic_dir(out) as tmp:
        write_json(tmp / "config.json", hf_config(model.config, special))
        write_json(tmp / "generation_config.json", generation_config(special))
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_text(tmp / "tokenizer.json", hf_tok.to_str(pretty=False))
        write_json(tmp / "tokenizer_config.json", tokenizer_config(template, model.config.sequence_len))
    return [out / name for name in FILES]
