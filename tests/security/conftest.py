"""Fixtures of the hostile-model tests: a sandboxed workspace with a secret just outside it, and the codec."""

from __future__ import annotations

import pytest

from nanocode.agents.sandbox import Sandbox
from nanocode.data.conversation import ConversationCodec
from tests.helpers import small_tokenizer

SECRET = "TOP-SECRET-CONTENT"


@pytest.fixture
def sandbox(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET + "\n")
    with Sandbox(root, timeout_s=10) as sb:
        yield sb


@pytest.fixture
def codec():
    return ConversationCodec(small_tokenizer())
