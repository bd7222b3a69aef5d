"""Bits per byte, MFU accounting, greedy progress samples and the JSONL metrics log."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nanocode.models.gpt import GPT, GPTConfig
from nanocode.train import mfu
from nanocode.train.bpb import bits_per_byte, bpb_sums, evaluate_bpb, make_eval_step
from nanocode.train.metrics import JsonlLogger, format_line, peak_memory_bytes, plain
from nanocode.train.sampling import greedy_complete, make_greedy
from nanocode.train.state import split_model
from tests.helpers import small_tokenizer

TINY = GPTConfig(sequence_len=64, vocab_size=512, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)


def test_bpb_counts_only_valid_non_special_targets():
    rng = np.random.default_rng(0)
    vocab = 16
    logits = rng.normal(size=(2, 5, vocab)).astype(np.float32)
    tokens = rng.integers(0, vocab, (2, 6)).astype(np.int32)
    tokens[0, 3] = 15  # a special token (0 bytes) as a target: excluded from nats and bytes
    tokens[1, 5] = -1  # an ignored target
    mask = np.ones_like(tokens)
    mask[1, 2] = 0  # a masked target
    table = np.arange(vocab, dtype=np.int32) % 4 + 1
    table[15] = 0
    nats, nbytes = bpb_sums(lambda x: jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(table))

    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want_nats = want_bytes = 0.0
    for b in range(2):
        for t in range(5):
            target = tokens[b, t + 1]
            if target < 0 or mask[b, t + 1] == 0 or table[target] == 0:
                continue
            want_nats -= logp[b, t, target]
            want_bytes += table[target]
    np.testing.assert_allclose(float(nats), want_nats, rtol=1e-5)
    assert float(nbytes) == want_bytes
    assert math.isclose(bits_per_byte(want_nats, want_bytes), want_nats / math.log(2) / want_bytes, rel_tol=1e-6)
    assert math.isnan(bits_per_byte(1.0, 0.0))


def test_eval_step_bpb_of_uniform_model_is_log2_vocab_over_bytes():
    """A fresh GPT has near-uniform logits (head init 0.001): bpb ~ log2(V) / mean target bytes."""
    tokenizer = small_tokenizer()
    model = GPT(TINY, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_model(model)
    eval_step = make_eval_step(graphdef, tokenizer.token_bytes())
    text = "def f(x):\n    return x * 2\n" * 20
    ids = tokenizer.encode(text, bos=True)[: 2 * (TINY.sequence_len + 1)]
    rows = np.asarray(ids, np.int32).reshape(2, -1)
    bpb = evaluate_bpb(eval_step, params, rest, [{"tokens": rows}])
    table = tokenizer.token_bytes()
    expected = math.log2(TINY.vocab_size) / table[rows[:, 1:]].mean()
    assert abs(bpb - expected) / expected < 0.01


def test_greedy_matches_step_by_step_argmax():
    tokenizer = small_tokenizer()
    model = GPT(TINY, rngs=nnx.Rngs(3))
    graphdef, params, rest = split_model(model)
    prompts = ["def main():", "import os\nimport"]
    texts = greedy_complete(make_greedy(graphdef, 5), tokenizer, params, rest, prompts, 5, rows_multiple=4)
    for prompt, text in zip(prompts, texts):
        ids = tokenizer.encode(prompt, bos=True)
        for _ in range(5):
            ids.append(int(jnp.argmax(model(jnp.asarray([ids]))[0, -1])))
        assert text == tokenizer.decode(ids[-5:])


def test_peak_flops_sources():
    cpu = jax.devices()[:2]
    peak, desc = mfu.peak_flops(jnp.float32, cpu, per_device=1e12)
    assert peak == 2e12 and "config" in desc
    measured, desc = mfu.peak_flops(jnp.float32, cpu)
    assert measured == mfu.measure_matmul_flops("float32") and measured > 1e9  # whole machine, not x devices
    assert "measured float32" in desc
    assert mfu.mfu(1e6, 1e3, 2e9) == 0.5


def test_accelerator_table_lookup():
    class Fake:
        platform, device_kind = "tpu", "TPU v6 lite"

    assert mfu.accelerator_peak_flops(Fake()) == 918e12
    Fake.platform, Fake.device_kind = "gpu", "NVIDIA H100 80GB HBM3"
    assert mfu.accelerator_peak_flops(Fake()) == 989e12
    Fake.device_kind = "Some Future Chip"
    assert mfu.accelerator_peak_flops(Fake()) is None
    peak, desc = mfu.peak_flops(jnp.bfloat16, [Fake()])
    assert math.isnan(peak) and "peak_flops" in desc


def test_jsonl_logger_writes_plain_json(tmp_path):
    log = JsonlLogger(tmp_path / "m.jsonl")
    log.log({"step": 1, "loss": jnp.float32(2.5), "mfu": float("nan"), "arr": np.int64(3)})
    log.log({"step": 2, "loss": 2.0})
    JsonlLogger(tmp_path / "off.jsonl", enabled=False).log({"step": 1})
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 2.5, "mfu": None, "arr": 3}, {"step": 2, "loss": 2.0}]
    assert not (tmp_path / "off.jsonl").exists()
    assert plain({"a": [np.float32(1.5)]}) == {"a": [1.5]}
    assert format_line(3, {"loss": 2.0, "tok_per_s": 12345.0}, ("loss", "tok_per_s", "x")) == (
        "step 3 | loss 2 | tok_per_s 12,345"
    )


def test_peak_memory_falls_back_to_rss_on_cpu():
    nbytes, where = peak_memory_bytes(jax.devices()[:1])
    assert where == "rss" and nbytes > 10 * 2**20
