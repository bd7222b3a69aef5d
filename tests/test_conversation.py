import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.data.conversation import (
    ConversationCodec,
    ConversationError,
    MalformedToolCall,
    ToolCall,
    without_special_text,
)
from tests.helpers import small_tokenizer


@pytest.fixture(scope="module")
def codec():
    return ConversationCodec(small_tokenizer())


CONV = [
    {"role": "system", "content": "you are nanocode."},
    {"role": "user", "content": "fix hello.py"},
    {"role": "assistant", "content": "reading it.", "tool_call": {"name": "Read", "args": {"file_path": "hello.py"}}},
    {"role": "tool_result", "content": "    1→print('hi'"},
    {"role": "assistant", "content": "done — added the paren."},
]


def test_render_layout_and_mask_is_exactly_the_assistant_tokens(codec):
    ids, mask = codec.render(CONV)
    s = codec.ids
    tok = codec.tok
    expected = [s["bos"], s["user_start"], *tok.encode("you are nanocode.\n\nfix hello.py"), s["user_end"]]
    call = [
        s["tool_call_start"],
        *tok.encode("Read"),
        s["tool_arg"],
        *tok.encode("file_path"),
        s["tool_val"],
        *tok.encode("hello.py"),
        s["tool_call_end"],
    ]
    turn1 = [*tok.encode("reading it."), *call, s["assistant_end"]]
    result = [s["tool_result_start"], *tok.encode("    1→print('hi'"), s["tool_result_end"]]
    turn2 = [*tok.encode("done — added the paren."), s["assistant_end"]]
    expected += [s["assistant_start"], *turn1, *result, s["assistant_start"], *turn2]
    assert ids == expected
    trained = [t for t, m in zip(ids, mask) if m]
    assert trained == turn1 + turn2


def test_a_turn_marked_train_false_is_context_not_target(codec):
    """A scripted mistake (`"train": false`) renders the same tokens, all fed: only the turns after it are learnt."""
    miss = {"role": "assistant", "content": "reading it.", "tool_call": {"name": "Read", "args": {"file_path": "x.py"}}}
    conv = [*CONV[:2], {**miss, "train": False}, {"role": "tool_result", "content": "error: no such file"}, *CONV[2:]]
    ids, mask = codec.render(conv)
    plain_ids, _ = codec.render([*CONV[:2], miss, *conv[3:]])
    assert ids == plain_ids
    reference_ids, reference_mask = codec.render(CONV)
    assert [t for t, m in zip(ids, mask) if m] == [t for t, m in zip(reference_ids, reference_mask) if m]
    assert sum(mask) == sum(reference_mask)
    with pytest.raises(ConversationError, match="message 2: 'train' must be true or false"):
        codec.render([*CONV[:2], {**miss, "train": "no"}, *conv[3:]])


def test_overflow_rule(codec):
    ids, _ = codec.render(CONV)
    assert codec.render(CONV, max_tokens=len(ids) - 1) is None  # drop (training default)
    cut, mask = codec.render(CONV, max_tokens=10, overflow="truncate")
    assert cut == ids[:10] and len(mask) == 10
    assert codec.render(CONV, max_tokens=len(ids)) is not None


def test_bad_conversations_are_rejected(codec):
    with pytest.raises(ConversationError):
        codec.render([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ConversationError, match="tool_result must follow"):
        codec.render([{"role": "user", "content": "a"}, {"role": "tool_result", "content": "b"}])


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
name = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)
tool_call = st.fixed_dictionaries({"name": name, "args": st.dictionaries(name, text, max_size=3)})


@st.composite
def conversations(draw):
    msgs = [{"role": "user", "content": draw(text)}]
    for _ in range(draw(st.integers(1, 4))):
        call = draw(st.one_of(st.none(), tool_call))
        msg = {"role": "assistant", "content": draw(text)}
        if call:
            msg["tool_call"] = call
        msgs.append(msg)
        if call:
            msgs.append({"role": "tool_result", "content": draw(text)})
        if draw(st.booleans()):
            msgs.append({"role": "user", "content": draw(text)})
    return msgs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversations())
def test_render_parse_round_trip(codec, msgs):
    ids, mask = codec.render(msgs)
    assert codec.parse(ids) == msgs
    # the mask covers exactly the tokens inside assistant turns (after <|assistant_start|>, through <|assistant_end|>)
    inside, expect = False, []
    for t in ids:
        if t == codec.ids["assistant_start"]:
            expect.append(0)
            inside = True
            continue
        expect.append(1 if inside else 0)
        if t == codec.ids["assistant_end"]:
            inside = False
    assert mask == expect


def test_malformed_tool_calls_give_reasons(codec):
    s, enc = codec.ids, codec.tok.encode
    schemas = {"Read": ["file_path"], "Bash": ["command"]}
    ok = codec.parse_tool_call(
        [
            s["tool_call_start"],
            *enc("Bash"),
            s["tool_arg"],
            *enc("command"),
            s["tool_val"],
            *enc("ls"),
            s["tool_call_end"],
        ],
        schemas,
    )
    assert ok == ToolCall("Bash", {"command": "ls"})
    unterminated = codec.parse_tool_call([s["tool_call_start"], *enc("Bash")], schemas)
    assert isinstance(unterminated, MalformedToolCall) and "unterminated" in unterminated.reason
    unknown = codec.parse_tool_call([s["tool_call_start"], *enc("Delete"), s["tool_call_end"]], schemas)
    assert "unknown tool 'Delete'" in unknown.reason
    missing = codec.parse_tool_call([s["tool_call_start"], *enc("Read"), s["tool_call_end"]], schemas)
    assert "missing required argument(s): file_path" in missing.reason
    noval = codec.parse_tool_call(
        [s["tool_call_start"], *enc("Read"), s["tool_arg"], *enc("file_path"), s["tool_call_end"]], schemas
    )
    assert "no <|tool_val|>" in noval.reason
    turn = codec.parse_assistant([*enc("hm."), s["tool_call_start"], *enc("Read")])
    assert turn["content"] == "hm." and "unterminated" in turn["tool_call_error"]


def test_model_reply_with_special_text_is_not_acted_on():
    """A model that copies the prompt's plain-text tool syntax into a call gets an error back, never a tool run on
    '.<|tool_call_start|>Grep'; special strings in its prose are cut."""
    confused = {
        "role": "assistant",
        "content": "let me look<|assistant_end|>",
        "tool_call": {"name": "Grep", "args": {"pattern": "x", "path": ".<|tool_call_start|>Grep"}},
    }
    out = without_special_text(confused)
    assert out["content"] == "let me look" and "tool_call" not in out
    assert "special-token text" in out["tool_call_error"]
    fine = {"role": "assistant", "content": "ok", "tool_call": {"name": "Read", "args": {"file_path": "a.py"}}}
    assert without_special_text(fine) == fine
    assert without_special_text({"role": "assistant", "content": "<|tool_<|tool_arg|>arg|>"})["content"] == ""
