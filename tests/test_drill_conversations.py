"""Copy drills as SFT conversations: the reply writes back exactly the request's words, in another form; the set is
deterministic and registered."""

import pytest

import nanocode.registry as registry
from nanocode.core.errors import DataError
from nanocode.data.conversation import validate_messages
from nanocode.data.copy_drills import IDENTIFIER
from nanocode.data.drill_conversations import FORM_NAMES, CopyDrillConversations


def words_of(text: str) -> list[str]:
    """The identifiers of a form's text: `def w(` and `w.py` add `def` and `py`, never drill words (3+ characters,
    not keywords)."""
    return [w for w in IDENTIFIER.findall(text) if w != "def"]


def test_the_reply_writes_back_the_requests_words_in_another_form():
    conversations = CopyDrillConversations(count=200, test_count=10).conversations("train")
    assert len(conversations) == 200
    forms_seen = set()
    for messages in conversations:
        validate_messages(messages)
        request, reply = messages[0]["content"], messages[1]["content"]
        header, listed = request.split(": ", 1)
        given, wanted = header.removeprefix("write these ").split(" as ")
        assert {given, wanted} <= set(FORM_NAMES.values())
        forms_seen.add((given, wanted))
        assert given != wanted
        assert words_of(reply.replace(".py", "")) == words_of(listed.replace(".py", ""))
        assert 4 <= len(words_of(reply.replace(".py", ""))) <= 16
    assert len(forms_seen) == len(FORM_NAMES) * (len(FORM_NAMES) - 1)  # every ordered pair of forms


def test_same_seed_same_set_splits_and_seeds_differ():
    a, b, c = (CopyDrillConversations(count=30, test_count=5, seed=s) for s in (0, 0, 1))
    assert a.conversations("train") == b.conversations("train") != c.conversations("train")
    assert len(a.conversations("test")) == 5 and a.conversations("test") != a.conversations("train")[:5]


def test_the_name_tells_sets_drawn_differently_apart():
    names = {CopyDrillConversations(**kw).name for kw in ({}, {"seed": 1}, {"count": 8}, {"vocab_size": None})}
    assert len(names) == 4 and all(n.startswith("copy_drill_conversations-") for n in names)


def test_registered_and_bad_arguments_are_refused_with_its_name():
    assert registry.get("sft_dataset", "copy_drill_conversations") is CopyDrillConversations
    with pytest.raises(DataError, match="copy_drill_conversations: need count >= 1"):
        CopyDrillConversations(count=0)
    with pytest.raises(DataError, match="words a range"):
        CopyDrillConversations(words=(5, 2))
    with pytest.raises(ValueError, match="split must be"):
        CopyDrillConversations().conversations("validation")
