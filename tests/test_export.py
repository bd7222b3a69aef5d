"""`nanocode export --format hf`: the transformers NanoChatForCausalLM directory, checked file by file here (weights,
config, tokenizer.json against our tokenizer, the chat template against our codec), and loaded by transformers itself
where torch and transformers are installed (the round trip: logits and greedy generation)."""

import dataclasses
import importlib.util
import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.agents.policy import SYSTEM_PROMPT_HEAD, TOOL_EXAMPLE
from nanocode.core.errors import ConfigError
from nanocode.data.conversation import ConversationCodec
from nanocode.export.chat_template import chat_template
from nanocode.export.hf import FILES, export_hf
from nanocode.models.gpt import GPT, GPTConfig
from tests.helpers import experiment_gin, small_tokenizer, stdlib_texts

# GQA (4 query heads on 2 kv heads), a model vocab larger than the tokenizer's 512 ids (padded, as ours may be).
CONFIG = GPTConfig(sequence_len=128, vocab_size=520, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)

TEXTS = [
    "def parse(line):\n    return [int(x) for x in line.split(',')]  # 12345 6789\n",
    "Ünïcödé wörds, 中文字符, emoji 🙂 and\ttabs\r\n\r\n   trailing spaces   \n\n\n",
    "I'll say it's we've they're DON'T 2025-12-04 3.14159 0x1F",
    "<|bos|><|user_start|>fix a.py<|user_end|><|assistant_start|>ok<|tool_call_start|>Read<|tool_arg|>file_path"
    "<|tool_val|>a.py<|tool_call_end|><|assistant_end|><|tool_result_start|>x = 1<|tool_result_end|>",
    "a special token mid-word:abc<|tool_arg|>def and <|not_special|> text",
    "",
]

CONVERSATION = [
    {"role": "system", "content": "you are nanocode."},
    {"role": "user", "content": "what is in a.py?"},
    {
        "role": "assistant",
        "content": "let me look.",
        "tool_call": {"name": "Read", "args": {"file_path": "a.py", "limit": 20}},
    },
    {"role": "tool_result", "content": "def f():\n    return 1\n"},
    {"role": "assistant", "content": "it defines f, which returns 1."},
    {"role": "user", "content": "thanks"},
]


def openai_shape(messages):
    """The same conversation as transformers / OpenAI clients write it: tool_calls with a function, role tool."""
    out = []
    for m in messages:
        if "tool_call" in m:
            call = {
                "type": "function",
                "function": {"name": m["tool_call"]["name"], "arguments": m["tool_call"]["args"]},
            }
            out.append({"role": "assistant", "content": m["content"], "tool_calls": [call]})
        elif m["role"] == "tool_result":
            out.append({"role": "tool", "content": m["content"]})
        else:
            out.append(dict(m))
    return out


def trained_like(config: GPTConfig, seed: int = 0) -> GPT:
    """A GPT with every weight moved off its init (the zero output projections too), so each one shapes the logits."""
    model = GPT(config, rngs=nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
    nnx.update(model, jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype), params))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export directory, model, tokenizer): one export shared by the module's checks."""
    root = tmp_path_factory.mktemp("export")
    tokenizer = small_tokenizer()
    tokenizer.save(root / "tokenizer")
    model = trained_like(CONFIG)
    export_hf(model, root / "tokenizer", root / "hf", tools_head=SYSTEM_PROMPT_HEAD, tool_example=TOOL_EXAMPLE)
    return root / "hf", model, tokenizer


def render(template: str, messages, **kwargs) -> str:
    """The template rendered as transformers renders chat templates (sandboxed, trim/lstrip blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, **kwargs)


# ---------------------------------------------------------------------------------------------------- the files
def test_export_writes_every_file_and_the_config_maps_every_field(exported):
    out, model, tokenizer = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    config = json.loads((out / "config.json").read_text())
    special = tokenizer.special_tokens
    expected = {
        "architectures": ["NanoChatForCausalLM"],
        "model_type": "nanochat",
        "vocab_size": 520,
        "hidden_size": 64,
        "intermediate_size": 4 * 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "final_logit_softcapping": 15.0,
        "hidden_act": "relu2",
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "dtype": "float32",
        "bos_token_id": special["<|bos|>"],
        "eos_token_id": special["<|assistant_end|>"],
    }
    assert {k: config[k] for k in expected} == expected
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [special["<|assistant_end|>"], special["<|bos|>"]]
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "<|bos|>" and tok_config["eos_token"] == "<|assistant_end|>"


def test_safetensors_hold_our_weights_transposed_to_torch_layout(exported):
    from safetensors.numpy import load_file

    out, model, _ = exported
    weights = load_file(out / "model.safetensors")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    expected = {"model.embed_tokens.weight": params["wte"], "lm_head.weight": params["lm_head"].T}
    names = {"c_q": "q_proj", "c_k": "k_proj", "c_v": "v_proj", "c_proj": "o_proj"}
    for i in range(CONFIG.n_layer):
        block = params["blocks"][i]
        for ours, theirs in names.items():
            expected[f"model.layers.{i}.self_attn.{theirs}.weight"] = block["attn"][ours].T
        expected[f"model.layers.{i}.mlp.fc1.weight"] = block["mlp"]["c_fc"].T
        expected[f"model.layers.{i}.mlp.fc2.weight"] = block["mlp"]["c_proj"].T
    assert sorted(weights) == sorted(expected)
    for name, value in expected.items():
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], np.asarray(value), err_msg=name)
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 16, 64)  # [kv heads * head_dim, embd]


def test_scanned_layers_export_the_same_weights(exported, tmp_path):
    from nanocode.models import scan

    out, model, _ = exported
    stacked = scan.convert(model, scan_layers=True)
    export_hf(stacked, out.parent / "tokenizer", tmp_path / "hf")
    from safetensors.numpy import load_file

    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---------------------------------------------------------------------------------------------------- the tokenizer
def test_tokenizer_json_encodes_to_our_ids(exported):
    from tokenizers import Tokenizer

    out, _, tokenizer = exported
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.get_vocab_size() == tokenizer.vocab_size
    unseen = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")[:20_000]  # not trained on
    for text in [*TEXTS, stdlib_texts(30_000)[0][:30_000], unseen]:
        ours = tokenizer.encode(text, allowed_special="all")
        assert hf.encode(text, add_special_tokens=False).ids == ours, text[:80]
        assert hf.encode(text).ids == [tokenizer.bos_id, *ours]  # <|bos|> in front, as pretraining documents
        assert hf.decode(ours, skip_special_tokens=False) == text
    for token, id_ in tokenizer.special_tokens.items():
        assert hf.token_to_id(token) == id_
    # chat tokens are special (dropped by skip_special_tokens); the tool-call structure stays in decoded text
    ids = tokenizer.encode(TEXTS[3], allowed_special="all")
    assert hf.decode(ids, skip_special_tokens=True) == (
        "fix a.pyok<|tool_call_start|>Read<|tool_arg|>file_path<|tool_val|>a.py<|tool_call_end|>"
        "<|tool_result_start|>x = 1<|tool_result_end|>"
    )


# ---------------------------------------------------------------------------------------------------- the chat template
@pytest.mark.parametrize("shape", ["nanocode", "openai"])
def test_chat_template_renders_exactly_as_the_codec(exported, shape):
    from tokenizers import Tokenizer

    out, _, tokenizer = exported
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    codec = ConversationCodec(tokenizer)
    messages = CONVERSATION if shape == "nanocode" else openai_shape(CONVERSATION)
    ids, _ = codec.render(CONVERSATION)
    text = render(template, messages)
    assert text == tokenizer.decode(ids)
    assert tokenizer.encode(text, allowed_special="all") == ids
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.encode(text, add_special_tokens=False).ids == ids
    prompt = render(template, messages[:4], add_generation_prompt=True)
    assert tokenizer.encode(prompt, allowed_special="all") == codec.render_prompt(CONVERSATION[:4])


def test_chat_template_lists_request_tools_as_the_server_does(exported):
    from tokenizers import Tokenizer

    from nanocode.agents.tool_schema import FunctionTool, ToolChoice, show_tools

    out, _, tokenizer = exported
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    codec = ConversationCodec(tokenizer)
    specs = [
        {"name": "Bash", "description": "run", "parameters": {"type": "object", "properties": {"command": {}}}},
        {"name": "Read", "parameters": {"type": "object", "properties": {"file_path": {}, "limit": {}}}},
    ]
    tools = {s["name"]: FunctionTool(s["name"], s.get("description", ""), s["parameters"]) for s in specs}
    openai_tools = [{"type": "function", "function": s} for s in specs]
    # The same text as the server's prompt. Not the same ids: the tool lines hold special-token strings, which our
    # codec encodes as plain text and a Hugging Face tokenizer as the special tokens (it matches added tokens in all
    # text); the README says so.
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    for messages in (CONVERSATION[1:2], CONVERSATION[:2]):  # without and with a system message of its own
        expected = codec.render_prompt(show_tools(list(messages), tools, ToolChoice()))
        text = render(template, messages, tools=openai_tools, add_generation_prompt=True)
        assert text == tokenizer.decode(expected)
        assert hf.encode(text, add_special_tokens=False).ids == tokenizer.encode(text, allowed_special="all")
    # a system text that lists the tools already is left as it is
    listed = [{"role": "system", "content": show_tools(CONVERSATION[1:2], tools, ToolChoice())[0]["content"]}]
    text = render(template, [*listed, CONVERSATION[1]], tools=openai_tools)
    assert text == tokenizer.decode(codec.render([*listed, CONVERSATION[1]])[0])


def test_chat_template_refuses_what_the_format_cannot_hold():
    two_calls = openai_shape(CONVERSATION[1:3])
    two_calls[1]["tool_calls"] *= 2
    with pytest.raises(ValueError, match="one tool call per assistant turn"):
        render(chat_template(), two_calls)
    string_args = openai_shape(CONVERSATION[1:3])
    string_args[1]["tool_calls"][0]["function"]["arguments"] = '{"file_path": "a.py"}'
    with pytest.raises(ValueError, match="mapping, not a JSON string"):
        render(chat_template(), string_args)


def nanochat_forward(directory, ids: list[int]) -> np.ndarray:
    """transformers' NanoChatForCausalLM forward (modeling_nanochat.py) transcribed to numpy, fed only the exported
    config.json and model.safetensors: it checks how those files will be read where transformers itself is absent
    (the round trip below runs the real thing). Names follow transformers'."""
    from safetensors.numpy import load_file

    cfg = json.loads((directory / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(directory / "model.safetensors").items()}
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg["hidden_size"] // heads
    t = len(ids)

    def norm(x):  # NanoChatRMSNorm: no weight
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + cfg["rms_norm_eps"])

    def rotate_half(x):  # NanoChat's: [x2, -x1]
        x1, x2 = np.split(x, 2, axis=-1)
        return np.concatenate([x2, -x1], axis=-1)

    theta = cfg["rope_parameters"]["rope_theta"]
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    freqs = np.arange(t)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([freqs, freqs], -1))[:, None], np.sin(np.concatenate([freqs, freqs], -1))[:, None]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    x = norm(w["model.embed_tokens.weight"][ids])  # the norm before the layers
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = norm(x)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, heads, head_dim)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, head_dim)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, head_dim)
        q, k = norm(q * cos + rotate_half(q) * sin), norm(k * cos + rotate_half(k) * sin)  # RoPE, then QK-norm
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)  # repeat_kv
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        y = np.einsum("hqk,khd->qhd", probs, v).reshape(t, heads * head_dim)
        x = x + y @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x)
        x = x + np.square(np.maximum(h @ w[p + "mlp.fc1.weight"].T, 0)) @ w[p + "mlp.fc2.weight"].T  # relu2
    logits = norm(x) @ w["lm_head.weight"].T
    cap = cfg["final_logit_softcapping"]
    return cap * np.tanh(logits / cap)


def test_the_exported_files_read_as_transformers_reads_them_give_our_logits(exported):
    out, model, tokenizer = exported
    ids = tokenizer.encode(stdlib_texts(20_000)[0][:400], bos=True)[:100]
    ours = np.asarray(model(jnp.asarray([ids])))[0]
    theirs = nanochat_forward(out, ids)
    assert np.abs(theirs - ours).max() <= 1e-4, np.abs(theirs - ours).max()
    assert np.abs(ours).max() > 0.1  # the logits are not flat: every weight shaped them


# ---------------------------------------------------------------------------------------------------- refusals
def test_unsupported_models_are_refused_with_one_line(tmp_path, exported):
    out, _, tokenizer = exported
    from examples.swiglu import GPTSwiGLU

    fork = GPTSwiGLU(CONFIG, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="mlp_class SwiGLU has no transformers NanoChat counterpart") as e:
        export_hf(fork, out.parent / "tokenizer", tmp_path / "fork")
    assert "\n" not in str(e.value) and not (tmp_path / "fork").exists()

    @dataclasses.dataclass(frozen=True)
    class BiasedConfig(GPTConfig):
        qkv_bias: bool = True

    biased = GPT(BiasedConfig(**dataclasses.asdict(CONFIG)), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"GPTConfig.qkv_bias has no transformers NanoChat counterpart"):
        export_hf(biased, out.parent / "tokenizer", tmp_path / "biased")


def test_an_occupied_out_directory_is_refused_and_kept(tmp_path, exported):
    out, model, _ = exported
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds notes.txt, not only an earlier export"):
        export_hf(model, out.parent / "tokenizer", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    export_hf(model, out.parent / "tokenizer", out)  # an earlier export is replaced whole
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


# ---------------------------------------------------------------------------------------------------- the command
GIN = "\n".join(experiment_gin("base/mesh/cpu.gin")) + textwrap.dedent(
    """
    Experiment.tag = 'export'
    Experiment.system_prompt = ''
    GPTConfig.sequence_len = 128
    GPTConfig.vocab_size = 520
    GPTConfig.n_layer = 2
    GPTConfig.n_head = 4
    GPTConfig.n_kv_head = 2
    GPTConfig.n_embd = 64
    """
)


def test_cli_exports_the_latest_checkpoint(tmp_path, gin_clean, capsys):
    import optax
    from safetensors.numpy import load_file

    from nanocode.cli.main import main
    from nanocode.core import mesh as mesh_lib
    from nanocode.core.checkpoint import Checkpointer, make_meta
    from nanocode.core.workspace import Workspace
    from nanocode.train.state import init_train_state

    workspace = Workspace("export")
    small_tokenizer().save(workspace.tokenizer_dir)
    factory = mesh_lib.AxesMesh(shape=(1, -1, 1))  # saved sharded over the 8 simulated devices, as a trainer does
    mesh = factory.make()
    with mesh_lib.activate(mesh, factory.rules):
        state = init_train_state(GPT, CONFIG, optax.adamw(1e-3), seed=3, mesh=mesh, rules=factory.rules).state
        state.params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), state.params)
    with Checkpointer(workspace.checkpoint_dir("sft"), async_save=False) as ckpt:
        ckpt.save(4, state, meta=make_meta(config=GIN, tokenizer="t", data_spec="d"))
        ckpt.wait()
    gin_file = tmp_path / "export.gin"
    gin_file.write_text(GIN)
    out = tmp_path / "hf"
    assert main(["export", "--gin_file", str(gin_file), "--format", "hf", "--out", str(out)]) == 0
    assert "loaded the sft checkpoint, step 4" in capsys.readouterr().err
    weights = load_file(out / "model.safetensors")
    lm_head = np.asarray(nnx.to_pure_dict(state.params)["lm_head"])
    np.testing.assert_array_equal(weights["lm_head.weight"], lm_head.T)
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert SYSTEM_PROMPT_HEAD.split("\n")[0] in template  # the tools are listed as nanocode lists them

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["export", "--gin_file", str(gin_file), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanocode export: error:") and "not only an earlier export" in err and "\n" not in err


# ---------------------------------------------------------------------------------------------------- the round trip
HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(
    not HAVE_TORCH, reason="the round trip loads the export with transformers: needs torch and transformers"
)
def test_transformers_loads_the_export_and_matches_our_logits_and_greedy_generation(exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, model, tokenizer = exported
    hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf_model).__name__ == "NanoChatForCausalLM"
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = stdlib_texts(20_000)[0][:300]
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tokenizer.encode(text)
    ids = [tokenizer.bos_id, *ids][:100]  # within the model's 128 positions
    ours = np.asarray(model(jnp.asarray([ids])))[0]
    with torch.no_grad():
        theirs = hf_model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(theirs - ours).max() <= 1e-4, np.abs(theirs - ours).max()  # logits are soft-capped to +-15

    # greedy, 32 tokens: ours on a fixed-length row (causal: the zeros after position t are never seen)
    prompt = ids[:40]
    tokens = [*prompt, *[0] * 32]
    for t in range(len(prompt), len(tokens)):
        tokens[t] = int(jnp.argmax(model(jnp.asarray([tokens]))[0, t - 1]))
    stops = {tokenizer.special_id("<|assistant_end|>"), tokenizer.bos_id}
    assert not stops & set(tokens[len(prompt) :])  # min_new_tokens below masks the stop ids out: none may be due
    with torch.no_grad():
        generated = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    assert generated[0].tolist() == tokens

    codec = ConversationCodec(tokenizer)
    chat_ids = hf_tok.apply_chat_template(openai_shape(CONVERSATION[:4]), add_generation_prompt=True, tokenize=True)
    if isinstance(chat_ids, dict) or hasattr(chat_ids, "keys"):
        chat_ids = chat_ids["input_ids"]
    assert list(chat_ids) == codec.render_prompt(CONVERSATION[:4])
