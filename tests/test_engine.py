"""The KV-cache engine against full recomputation: logits, greedy tokens, batching, stops, bounded compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanocode.models.engine import ContextFull, Engine, next_power_of_two
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.models.sampling import GREEDY, SamplingParams

TINY = GPTConfig(sequence_len=128, vocab_size=523, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


def tiny_model(config: GPTConfig = TINY, seed: int = 0, scale: float = 0.5) -> GPT:
    """A random GPT whose every weight is non-zero (the zero-initialised projections would make each block the
    identity, and then the cache would not matter), scaled so the logits are far from ties."""
    model = GPT(config, rngs=nnx.Rngs(seed))
    params = jax.tree.leaves(nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(params)))
    for p in params:
        p[...] = scale * jax.random.normal(next(keys), p.shape)
    return model


def full_logits(model: GPT, seq: list[int]) -> np.ndarray:
    """The plain model's logits at every position of `seq`, no cache: one jitted forward over a fixed-width buffer
    (causal attention: the right padding cannot change the positions read), so every length compiles once."""
    width = model.config.sequence_len
    graphdef, state = nnx.split(model)
    forward = _FORWARDS.setdefault(id(model), jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)))
    padded = np.zeros((1, width), np.int32)
    padded[0, : len(seq)] = seq
    return np.asarray(forward(state, padded))[0, : len(seq)]


_FORWARDS: dict = {}


def greedy_reference(model: GPT, prompt: list[int], max_new: int, stop_ids=()) -> list[int]:
    """Greedy decoding by re-running the whole model on the whole sequence for every token (no cache)."""
    seq, out = list(prompt), []
    for _ in range(max_new):
        token = int(np.argmax(full_logits(model, seq)[-1]))
        out.append(token)
        if token in stop_ids:
            break
        seq.append(token)
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def prompt(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, n).tolist()


def test_prefill_logits_match_the_full_forward_across_chunks(model):
    engine = Engine(model, min_bucket=4, max_bucket=8)  # 21 tokens: chunks of 8 + 8 + 5 (bucket 8)
    ids = prompt(21, 0)
    full = np.asarray(model(jnp.asarray([ids])))[0]
    cache = engine.new_cache(1)
    np.testing.assert_allclose(engine.logits(cache, [ids]), full[-1:], atol=1e-4, rtol=1e-4)
    assert cache.lengths.tolist() == [21]
    # token by token on top of the cache: each step's logits equal the full forward at that position
    more = prompt(5, 1)
    full = np.asarray(model(jnp.asarray([ids + more])))[0]
    for i, t in enumerate(more):
        np.testing.assert_allclose(engine.logits(cache, [[t]])[0], full[21 + i], atol=1e-4, rtol=1e-4)


def test_cached_greedy_equals_recompute_over_three_turns(model):
    """One conversation, three turns, the cache carried over: each turn feeds only its new tokens."""
    engine = Engine(model, min_bucket=4, max_bucket=16)
    cache = engine.new_cache(1)
    history: list[int] = []
    pending: list[int] = []  # the previous turn's last token: sampled, not yet fed
    for turn in range(3):
        user = prompt(7 + 5 * turn, 10 + turn)
        new = pending + user
        before = int(cache.lengths[0])
        out = [col[0] for col in engine.generate(cache, [new], GREEDY, max_new_tokens=12)]
        assert out == greedy_reference(model, history + new, 12), f"turn {turn}"
        history += new + out[:-1]
        pending = out[-1:]
        # carried over: the cache grew by exactly the new tokens and the fed generated ones, no re-encoding
        assert int(cache.lengths[0]) == before + len(new) + len(out) - 1 == len(history)


def test_stop_ids_end_generation_with_the_stop_token(model):
    engine = Engine(model, min_bucket=4)
    ids = prompt(9, 3)
    ref = greedy_reference(model, ids, 10)
    stop = ref[4]
    first = ref.index(stop)
    cache = engine.new_cache(1)
    out = [col[0] for col in engine.generate(cache, [ids], GREEDY, max_new_tokens=10, stop_ids=[stop])]
    assert out == ref[: first + 1]
    assert cache.lengths.tolist() == [len(ids) + first]  # the stop token itself is not fed


def test_batched_equals_unbatched_greedy_and_sampled(model):
    engine = Engine(model, min_bucket=4, max_bucket=16)
    prompts = [prompt(3, 20), prompt(19, 21), prompt(8, 22)]
    settings = [GREEDY, SamplingParams(temperature=1.0, top_k=20, seed=5), SamplingParams(0.8, top_p=0.9, seed=6)]
    limits = [6, 9, 4]
    alone = []
    for p, s, n in zip(prompts, settings, limits):
        alone.append([c[0] for c in engine.generate(engine.new_cache(1), [p], [s], max_new_tokens=n)])
    cache = engine.new_cache(4)  # the fourth row takes no part
    columns = list(engine.generate(cache, prompts + [[]], settings + [GREEDY], max_new_tokens=limits + [0]))
    together = [[c[r] for c in columns if c[r] is not None] for r in range(4)]
    assert together[:3] == alone and together[3] == []
    assert [len(t) for t in alone] == limits
    assert cache.lengths.tolist() == [len(p) + n - 1 for p, n in zip(prompts, limits)] + [0]


def test_send_ends_a_row_early(model):
    engine = Engine(model, min_bucket=4)
    cache = engine.new_cache(2)
    gen = engine.generate(cache, [prompt(5, 30), prompt(6, 31)], GREEDY, max_new_tokens=8)
    got = [next(gen)]
    got.append(gen.send([0]))  # stop row 0 after its first token
    got += list(gen)
    assert got[1][0] is None and all(c[0] is None for c in got[1:]) and len(got) == 8
    assert cache.lengths.tolist() == [5, 6 + 7]


def test_compile_count_stays_bounded(model):
    engine = Engine(model, min_bucket=4, max_bucket=16)
    buckets = [4, 8, 16]
    for n in (1, 3, 5, 9, 17, 30, 2, 16):
        cache = engine.new_cache(1)
        for turn in range(2):  # a second turn on a warm cache compiles nothing new either
            list(engine.generate(cache, [prompt(n, n + turn)], GREEDY, max_new_tokens=3))
    # one decode loop plus one prefill shape per bucket, whatever the prompt lengths and turns
    assert engine.traces == len(buckets) + 1
    assert engine._step_jit._cache_size() == len(buckets) and engine._decode_jit._cache_size() == 1
    list(engine.generate(engine.new_cache(1), [prompt(11, 99)], SamplingParams(0.7, top_k=3), max_new_tokens=3))
    # sampling settings, stop sets and lengths that are not a multiple of the chunk are data, not shapes
    list(engine.generate(engine.new_cache(1), [prompt(5, 98)], GREEDY, max_new_tokens=37, stop_ids=[1, 2, 3]))
    assert engine.traces == len(buckets) + 1


def test_context_full_and_generation_stops_at_the_end_of_the_cache(model):
    engine = Engine(model, max_len=24, min_bucket=4)
    cache = engine.new_cache(1)
    with pytest.raises(ContextFull):
        engine.logits(cache, [prompt(25, 40)])
    assert cache.lengths.tolist() == [0]  # nothing was fed
    out = [c[0] for c in engine.generate(cache, [prompt(20, 41)], GREEDY, max_new_tokens=50)]
    assert len(out) == 4 and cache.lengths.tolist() == [23]  # the 4th token would be fed at position 23: fits
    assert out == greedy_reference(model, prompt(20, 41), 4)


def test_bf16_engine_runs_and_tracks_the_fp32_model():
    import dataclasses

    cfg = dataclasses.replace(TINY, compute_dtype="bfloat16")
    model = tiny_model(cfg)
    engine = Engine(model, min_bucket=4, compute_dtype="bfloat16")  # the model's own numerics
    assert engine.param_bytes() == sum(p.size * 2 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    ids = prompt(10, 50)
    logits = engine.logits(engine.new_cache(1), [ids])
    np.testing.assert_allclose(logits[0], np.asarray(model(jnp.asarray([ids])))[0, -1], atol=0.1)  # bf16 rounding
    fp32 = tiny_model(TINY)  # the same weights in fp32
    np.testing.assert_allclose(logits[0], np.asarray(fp32(jnp.asarray([ids])))[0, -1], atol=0.15)
    # on CPU the engine computes a bf16 model in fp32 by default: then it matches the fp32 model
    assert Engine(model).config.compute_dtype == ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    np.testing.assert_allclose(
        Engine(model, min_bucket=4, compute_dtype="float32").logits(Engine(model).new_cache(1), [ids])[0],
        np.asarray(fp32(jnp.asarray([ids])))[0, -1],
        atol=1e-4,
    )


def test_next_power_of_two():
    assert [next_power_of_two(n) for n in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 4, 4, 8, 16, 32]


@pytest.mark.parametrize("batch", [1, 8])
def test_decode_step_updates_the_cache_in_place(model, batch):
    """No copy of a cache-sized buffer in the compiled decode step (layouts that made XLA copy each layer's cache at
    every token are what the engine's layout avoids); the buffers are donated and aliased to the outputs."""
    from nanocode.models import sampling

    engine = Engine(model, max_len=96)
    cache = engine.new_cache(batch)
    args = sampling.stack([GREEDY] * batch)
    tokens, ones = np.zeros((batch,), np.int32), np.ones((batch,), np.int32)
    state = (tokens, ones, ones > 0, 0 * ones, 9 * ones, np.zeros((TINY.vocab_size,), bool))
    for hlo in (  # a prefill of one token, and the decode loop
        engine._step_jit.lower(engine._params, engine._rest, cache.k, cache.v, tokens[:, None], ones, ones, **args),
        engine._decode_jit.lower(engine._params, engine._rest, cache.k, cache.v, *state, **args),
    ):
        text = hlo.compile().as_text()
        shapes = {f"f32[{','.join(map(str, buf.shape))}]" for buf in cache.k + cache.v}
        copies = [line for line in text.splitlines() if " copy(" in line and any(s in line for s in shapes)]
        assert copies == []
        assert "input_output_alias" in text.splitlines()[0]


# ---------------------------------------------------------------------------------------------- chunked decode
def step_by_step(engine: Engine, ids: list[int], params: SamplingParams, max_new: int, stop_ids=()) -> list[int]:
    """The unchunked path: one jitted call and one host sync per token (Engine.feed of each token alone)."""
    from nanocode.models import sampling

    cache, args = engine.new_cache(1), sampling.stack([params])
    out = [int(engine.feed(cache, [ids], args)[0])]
    while len(out) < max_new and out[-1] not in stop_ids:
        out.append(int(engine.feed(cache, [[out[-1]]], args)[0]))
    return out


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunked_decode_equals_one_step_at_a_time(model, chunk):
    """Greedy and seeded sampling, a batch of rows with limits that are not multiples of the chunk, a stop id that
    falls inside a chunk: every row's tokens equal the one-call-per-token path's, and the greedy ones recompute's."""
    engine = Engine(model, min_bucket=4, max_bucket=16, decode_chunk=chunk)
    prompts = [prompt(6, 60), prompt(13, 61), prompt(9, 62)]
    settings = [GREEDY, SamplingParams(temperature=1.0, top_k=20, seed=7), SamplingParams(0.9, top_p=0.8, seed=8)]
    limits = [11, 13, 7]
    free_run = [step_by_step(engine, p, s, n) for p, s, n in zip(prompts, settings, limits)]
    assert free_run[0] == greedy_reference(model, prompts[0], limits[0])
    # stop ids: row 0's 6th token and row 1's 5th (mid-chunk for chunk 3 and 8); rows stop at their first stop id
    stop_ids = [free_run[0][5], free_run[1][4]]
    want = [step_by_step(engine, p, s, n, stop_ids) for p, s, n in zip(prompts, settings, limits)]
    assert all(len(w) <= n for w, n in zip(want, [6, 5, 7]))  # each row stops at the latest where planned
    alone = [
        [c[0] for c in engine.generate(engine.new_cache(1), [p], [s], max_new_tokens=n, stop_ids=stop_ids)]
        for p, s, n in zip(prompts, settings, limits)
    ]
    assert alone == want
    cache = engine.new_cache(3)
    columns = list(engine.generate(cache, prompts, settings, max_new_tokens=limits, stop_ids=stop_ids))
    together = [[c[r] for c in columns if c[r] is not None] for r in range(3)]
    assert together == want
    assert len(columns) == max(len(w) for w in want)  # no column after every row stopped
    # the cache holds each row's prompt and its yielded tokens but the last, whatever the device decoded ahead
    assert cache.lengths.tolist() == [len(p) + len(w) - 1 for p, w in zip(prompts, want)]


@pytest.mark.parametrize("chunk", [3, 8])
def test_cache_after_chunked_decode_equals_recompute(model, chunk):
    """A row ended by the caller mid-chunk (send) and a row that stops on its own: their caches hold exactly the
    yielded history (the tokens decoded ahead are invisible), so the next turn's logits and tokens match recompute."""
    engine = Engine(model, min_bucket=4, max_bucket=16, decode_chunk=chunk)
    prompts = [prompt(7, 70), prompt(10, 71)]
    cache = engine.new_cache(2)
    gen = engine.generate(cache, prompts, GREEDY, max_new_tokens=[20, 9])
    columns = [next(gen), next(gen)]
    columns.append(gen.send([0]))  # end row 0 after its second token, inside the first chunk
    columns += list(gen)
    outs = [[c[r] for c in columns if c[r] is not None] for r in range(2)]
    assert outs[0] == greedy_reference(model, prompts[0], 2)
    assert outs[1] == greedy_reference(model, prompts[1], 9)
    assert cache.lengths.tolist() == [len(prompts[0]) + 1, len(prompts[1]) + 8]
    histories = [p + o for p, o in zip(prompts, outs)]  # what each row's next turn continues from
    for r in range(2):
        np.testing.assert_allclose(
            engine.logits(cache, [[outs[r][-1]] if i == r else [] for i in range(2)])[r],
            full_logits(model, histories[r])[-1],
            atol=1e-4,
            rtol=1e-4,
        )
    # a second turn on the same cache overwrites the positions decoded ahead
    more = [prompt(4, 72), prompt(3, 73)]
    columns = list(engine.generate(cache, more, GREEDY, max_new_tokens=[10, 5]))
    for r in range(2):
        got = [c[r] for c in columns if c[r] is not None]
        assert got == greedy_reference(model, histories[r] + more[r], [10, 5][r])


def test_decode_chunk_must_be_positive(model):
    from nanocode.core.errors import ConfigError

    with pytest.raises(ConfigError, match="decode_chunk"):
        Engine(model, decode_chunk=0)
