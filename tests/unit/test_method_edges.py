"""Greedy edge cases for every method the registry builds, each compared on token ids with plain
greedy decoding of the same target: a one-token prompt, max_new_tokens 1 and 2, an answer cut at
the model's context limit (max_position_embeddings) while drafts would run past it, and a stop
token drafted inside an accepted run.

Each method is built through its registry entry (its flags, its checks, its build) on one tiny
random target, with the drafts, heads and datastore it needs made here for that target. A newly
registered method is therefore covered as soon as it is registered (built with its default flags,
or with the variants listed in VARIANTS); one the registry cannot build on a tiny model is named in
NOT_BUILT_ON_A_TINY_TARGET with the reason."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from evaluation.methods import REGISTRY, check_method_args, parser_for
from specdec.engine import SpeculativeEngine
from specdec.tree import depths

from helpers import PROMPT, varied_llama

CONTEXT = 40  # the tiny target's max_position_embeddings

NOT_BUILT_ON_A_TINY_TARGET = {
    "ar_llamacpp": "decodes a GGUF file of its own (4-bit weights, in llama.cpp), not the target in memory",
}

# Flags per method variant ({name} is the path of an artefact made below); a method not named here
# runs with its default flags. "auto" budgets are left out: they follow timed verification costs, so
# two runs of one question may draft differently (the stop-token case compares two runs step by step).
EXACT_DRAFT = ["--drafter-path", "{draft}", "--exits", "4,8", "--thresholds", "1,0"]  # the target itself
SD2_TREE = [*EXACT_DRAFT, "--tree", "--total-token", "16", "--depth", "4", "--top-k", "3"]
VARIANTS = {
    "ar": {"engine": [], "hf": ["--engine", "hf"]},
    "sd2": {"chain": EXACT_DRAFT,
            "chain-early-exits": ["--drafter-path", "{draft}", "--exits", "2,4,8", "--thresholds", "0.6,0.6,0"],
            "tree": SD2_TREE, "tree-lookup": [*SD2_TREE, "--lookup-tokens", "8"],
            "lookup-first": [*SD2_TREE, "--lookup-tokens", "8", "--lookup-first"]},
    "sps": {"engine": ["--drafter-path", "{draft}"], "hf": ["--drafter-path", "{draft}", "--engine", "hf"]},
    "pld": {"engine": [], "hf": ["--engine", "hf"]},
    "rest": {"engine": ["--datastore-path", "{datastore}", "--draft-tokens", "16"]},
    "eagle": {"static": ["--ea-model-path", "{eagle}", "--total-token", "12", "--depth", "3"]},
    "eagle2": {"dynamic": ["--ea-model-path", "{eagle}", "--total-token", "12", "--depth", "3", "--top-k", "3"]},
    "eagle3": {"dynamic": ["--ea-model-path", "{eagle3}", "--total-token", "12", "--depth", "3", "--top-k", "3"]},
    "medusa": {"static": ["--medusa-model-path", "{medusa}", "--total-token", "12"],
               "dynamic": ["--medusa-model-path", "{medusa}", "--total-token", "12", "--tree", "dynamic",
                           "--top-k", "3"]},
    "hydra": {"static": ["--hydra-model-path", "{hydra}", "--total-token", "12"]},
    "recycling": {"fixed": ["--total-token", "16"]},
    "samd": {"alone": [], "sd2": ["--aux", "sd2", "--aux-path", "{draft}"],
             "eagle2": ["--aux", "eagle2", "--aux-path", "{eagle}"]},
    "hf": {"generate": ["--method", "generate"], "prompt-lookup": ["--method", "prompt_lookup"],
           "assisted": ["--method", "assisted", "--drafter-path", "{draft}"]},
}
DRAFTLESS = {("ar", "engine"), ("ar", "hf"), ("hf", "generate")}  # one token per step: no draft to stop inside

CASES = [pytest.param(name, variant, id=f"{name}-{variant}")
         for name in REGISTRY if name not in NOT_BUILT_ON_A_TINY_TARGET
         for variant in VARIANTS.get(name, {"default": []})]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Passes this small gain nothing from a second thread, and on a busy machine every matrix
    product waits for it (a hundred times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def edge_target():
    # 8 layers: EAGLE-3 fuses three distinct depths (2, L // 2, L - 3)
    return varied_llama(num_layers=8, max_position_embeddings=CONTEXT)


@lru_cache(maxsize=None)
def _greedy(target, prompt: tuple[int, ...], max_new: int) -> tuple[int, ...]:
    ids, feed, cache = list(prompt), list(prompt), None
    with torch.no_grad():
        while len(ids) < min(len(prompt) + max_new, CONTEXT):
            out = target(torch.tensor([feed]), past_key_values=cache, use_cache=True)
            cache, feed = out.past_key_values, [int(out.logits[0, -1].argmax())]
            ids += feed
    return tuple(ids[len(prompt):])


def greedy(target, prompt, max_new: int) -> list[int]:
    """Plain greedy decoding with the model's own forward and cache (no engine), cut at the context."""
    return list(_greedy(target, tuple(prompt), max_new))


LONG_PROMPTS = (list(range(1, 32)), list(range(1, 17)))  # 9 and 24 tokens of room


def stop_prompts(target) -> list[list[int]]:
    """Prompts tried in turn for an answer with a drafted token to stop at: PROMPT; PROMPT with its
    answer and PROMPT's start again (copies from the prompt, by prompt lookup or SAM-D, are drafted
    and may be the answer's first of their token); PROMPT reversed; one token."""
    return [PROMPT, PROMPT + greedy(target, PROMPT, 12) + PROMPT[:4], PROMPT[::-1], [5]]


@pytest.fixture(scope="module")
def artefacts(edge_target, tmp_path_factory):
    """What the methods load, made for the tiny target: the target itself as a draft (exact, so
    accepted runs are long), fresh EAGLE, EAGLE-3, Medusa and Hydra heads, and a REST datastore of
    the target's own answers."""
    from sd2.draft_heads import DraftHeads
    from sd2.eagle3_head import Eagle3Head
    from sd2.eagle_head import EagleHead
    from specdec.rest_datastore import Datastore

    root = tmp_path_factory.mktemp("method_edges")
    paths = {name: root / name for name in ("draft", "eagle", "eagle3", "medusa", "hydra")}
    edge_target.save_pretrained(paths["draft"])
    torch.manual_seed(0)
    EagleHead.for_target(edge_target, "tiny").save(paths["eagle"])
    Eagle3Head.for_target(edge_target, target_path="tiny").save(paths["eagle3"])
    for kind in ("medusa", "hydra"):
        DraftHeads.for_target(kind, edge_target, 3, "tiny").save(paths[kind])
    answers = [greedy(edge_target, p, CONTEXT) for p in [[5], *stop_prompts(edge_target), *LONG_PROMPTS]]
    paths["datastore"] = Datastore.build(answers, edge_target.config.vocab_size, progress=False).save(root / "rest.npz")
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def build(edge_target, artefacts):
    """build(method, variant): the forward the registry builds for it on the tiny target (once)."""
    built = {}

    def forward(name, variant):
        if (name, variant) not in built:
            method = REGISTRY[name]
            argv = [a.format(**artefacts) for a in VARIANTS.get(name, {"default": []})[variant]]
            args = parser_for(method).parse_args(["--model-id", "tiny", "--device", "cpu", *argv])
            check_method_args(method, args)
            built[name, variant] = method.build(args, edge_target, None)
        return built[name, variant]
    return forward


def engine_of(forward) -> SpeculativeEngine | None:
    engine = getattr(forward, "__self__", None)
    return engine if isinstance(engine, SpeculativeEngine) else None


class DraftsPastTheBudget:
    """The built drafter, asked for drafts of its own full length whatever budget the engine told
    it: the engine must cut them. Records how far past the budget the deepest one reached."""

    def __init__(self, inner):
        self.inner, self.past = inner, 0

    def __getattr__(self, name):  # the drafter's hooks (observe, target_hidden, stats, ...)
        return getattr(self.inner, name)

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, None, generator)
        self.past = max(self.past, max(depths(tree.parents.tolist()), default=0) - max_depth)
        return tree


def test_only_the_named_methods_are_not_built_and_every_variant_is_a_registered_method():
    assert set(NOT_BUILT_ON_A_TINY_TARGET) == {"ar_llamacpp"}
    assert set(NOT_BUILT_ON_A_TINY_TARGET) <= set(REGISTRY) and set(VARIANTS) <= set(REGISTRY)
    assert {name for name, _ in DRAFTLESS} <= set(VARIANTS)
    assert not set(NOT_BUILT_ON_A_TINY_TARGET) & set(VARIANTS)


@pytest.mark.parametrize("name, variant", CASES)
def test_a_one_token_prompt(edge_target, build, name, variant):
    out = build(name, variant)([5], 8, set())
    assert out.token_ids == greedy(edge_target, [5], 8)
    assert out.new_tokens == 8 == sum(out.accept_lengths)


@pytest.mark.parametrize("max_new", [1, 2])
@pytest.mark.parametrize("name, variant", CASES)
def test_max_new_tokens_1_and_2(edge_target, build, name, variant, max_new):
    out = build(name, variant)(PROMPT, max_new, set())
    assert out.token_ids == greedy(edge_target, PROMPT, max_new)
    assert out.new_tokens == max_new == sum(out.accept_lengths)


@pytest.mark.parametrize("name, variant", CASES)
def test_an_answer_cut_at_the_context_limit(edge_target, build, name, variant):
    forward = build(name, variant)
    engine = engine_of(forward)
    past = 0  # how far past the context the deepest draft reached
    for prompt in LONG_PROMPTS:
        room = CONTEXT - len(prompt)
        expected = greedy(edge_target, prompt, room)
        out = forward(prompt, room, set())  # what the harness asks for: the room the context leaves
        assert out.token_ids == expected and len(prompt) + out.new_tokens == CONTEXT
        if engine is None:  # an outside reference (Hugging Face's generate) is only ever asked for the room
            continue
        # asked for more than fits, with drafts that ignore the remaining budget: the engine cuts both
        drafter = engine.drafter
        engine.drafter = past_the_budget = DraftsPastTheBudget(drafter)
        try:
            out = forward(prompt, room + 20, set())
        finally:
            engine.drafter = drafter
        assert out.token_ids == expected and len(prompt) + out.new_tokens == CONTEXT == len(prompt) + room
        assert sum(out.accept_lengths) == room
        past = max(past, past_the_budget.past)
    if engine is not None and (name, variant) not in DRAFTLESS:
        assert past > 0, "no draft reached past the context: the cut was never tested"


def drafted_stop_token(token_ids: list[int], accept_lengths: list[int]) -> tuple[int, int, int] | None:
    """(step, index in it, token) of a drafted token that an accepted run went on past (the step's
    last token is the target's own) and that does not occur earlier: a stop token there must end
    the answer inside that run. The deepest such token of the earliest step, or None."""
    start = 0
    for step, n in enumerate(accept_lengths[:-1]):  # the last step may be cut by max_new_tokens
        for j in range(n - 2, -1, -1):
            if token_ids[start + j] not in token_ids[:start + j]:
                return step, j, token_ids[start + j]
        start += n
    return None


@pytest.mark.parametrize("name, variant", CASES)
def test_a_stop_token_drafted_inside_an_accepted_run(edge_target, build, name, variant):
    forward = build(name, variant)
    for prompt in stop_prompts(edge_target):  # the first whose answer has a drafted token to stop at
        max_new = min(24, CONTEXT - len(prompt))
        free = forward(prompt, max_new, set())
        assert free.token_ids == greedy(edge_target, prompt, max_new)
        found = drafted_stop_token(free.token_ids, free.accept_lengths)
        if found is not None or (name, variant) in DRAFTLESS:
            break
    if (name, variant) in DRAFTLESS:
        assert found is None and set(free.accept_lengths) == {1}
        stop = free.token_ids[5]
    else:
        assert found is not None, (f"{name} {variant} never accepted a draft holding a token new to the answer "
                                   "on the tiny target: add a prompt to stop_prompts where it does")
        step, j, stop = found
    cut = free.token_ids.index(stop) + 1
    out = forward(prompt, max_new, {stop})
    assert out.token_ids == free.token_ids[:cut]  # plain decoding stopped at the stop token's first occurrence
    assert out.new_tokens == cut == sum(out.accept_lengths)
    if found is not None:  # the same steps as without the stop token, the last one cut after it
        assert out.accept_lengths == free.accept_lengths[:step] + [j + 1]
