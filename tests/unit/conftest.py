"""The tiny target most engine and drafter tests share, and its greedy output."""
from __future__ import annotations

import pytest

from specdec.engine import SpeculativeEngine

from helpers import PROMPT, varied_llama


@pytest.fixture(scope="session")
def target():
    return varied_llama()


@pytest.fixture(scope="session")
def ar_tokens(target):
    """The target's greedy continuation of PROMPT, 60 tokens (a shorter run compares a prefix)."""
    return SpeculativeEngine(target).generate(PROMPT, 60, set()).token_ids
