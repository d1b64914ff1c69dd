"""SD2: a sorted draft (the target's first N layers, SoFT-trained so that several exits work)
that drafts each token, or each tree level, with the shallowest confident exit.

The parts: ``SortedDraft`` (the draft's rows and deferred-exit KV), a proposer (``ChainProposer``
or ``TreeProposer``, the tree with a ``FixedTreeBudget`` or ``AutoTreeBudget``), and this class,
which runs a round, adds the free branches and counts what was drafted and kept.

Free branches. With ``lookup_tokens`` > 0, free continuations of up to that many tokens join the
tree as more branches, sharing the nodes where they agree with the draft (``free_branches.py``):
prompt lookup's (``lookup``, the default: what followed the last repeated n-gram of the context),
and with ``free_branches`` also Token Recycling's matrix chain (``recycling``) and SAM decoding's
automaton match (``samd``). They cost no draft compute and win where text is copied (translation,
summarisation, RAG) or the target repeats itself, while the draft wins where it agrees. Rounds in
which drafting does not pay (auto mode) still verify them. With ``lookup_first`` ("free first") a
round in which some free continuation follows a match of at least ``lookup_first_min_ngram`` tokens
verifies those continuations alone and the draft does not run (``stats["lookup_rounds"]``); the
draft drafts where nothing is found, or only after shorter matches (which then join its tree). A
recycled chain is keyed by the root alone (a match of 1): it goes first only with a minimum of 1.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from sd2.draft_spec import DraftSpec
from sd2.exit_adapters import exit_adapters_of, load_exit_adapters

from ...llama import LlamaRunner
from ...static_passes import PASSES, STATIC_PASS_ROWS, StaticPasses
from ...tree.budget import AutoTreeBudget, FixedTreeBudget
from ...tree.dynamic import TreeProposer
from ...tree.proposal import Proposal
from ...types import DraftTree
from ...vocab import load_draft
from ..free_branches import FreeBranches, check_free_branches
from ..sorted_draft import SortedDraft, SortedDraftDrafter
from .chain import ChainProposer



class SD2Drafter(SortedDraftDrafter):
    """``passes``: the draft's layers at their own shapes (eager), at fixed shapes (static: the CPU
    check of the graphed path) or at fixed shapes captured as CUDA graphs (cuda_graphs; call
    :meth:`capture_graphs` before timing anything)."""

    def __init__(self, draft: torch.nn.Module, exits=None, thresholds=None, tree: bool = False,
                 total_token: int | str = 60, depth: int = 4, top_k: int = 10,
                 draft_vocab: list[int] | None = None, temperature: float = 0.0, top_p: float = 1.0,
                 verify_costs: dict[int, float] | None = None, verify_timing_seconds: float | None = None,
                 max_draft_len: int = 16, int8_weights: bool = False, lookup_tokens: int = 0,
                 lookup_ngram: tuple[int, int] = (1, 3), lookup_first: bool = False, lookup_first_min_ngram: int = 1,
                 free_branches: tuple[str, ...] | None = None, passes: str = "eager"):
        spec = DraftSpec.from_config(draft.config, exits, thresholds)  # the checkpoint's unless overridden
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        free_branches = check_free_branches(lookup_tokens, free_branches, lookup_first, lookup_first_min_ngram,
                                            lookup_ngram)
        if passes not in PASSES:
            raise ValueError(f"passes must be one of {PASSES}, got {passes!r}")
        runner = LlamaRunner(draft)
        adapter_layers = runner.add_layers(attached_exit_adapters(draft, spec)) if spec.exit_adapters else None
        if int8_weights:
            runner.quantize_int8()
        self.exits, self.thresholds = spec.exits, spec.thresholds
        max_draft_rows = depth * top_k if tree else max_draft_len
        static = None if passes == "eager" else StaticPasses(  # a whole context, then a round's draft rows
            runner, runner.max_position + max_draft_rows + 1, STATIC_PASS_ROWS, cuda_graphs=passes == "cuda_graphs")
        self.draft = SortedDraft(runner, spec.exits, spec.thresholds, draft_vocab, branching=tree, passes=static,
                                 adapter_layers=adapter_layers)
        if not tree:
            self.proposer = ChainProposer(self.draft, temperature, top_p, max_draft_len)
        else:
            budget = AutoTreeBudget(verify_costs, verify_timing_seconds) if total_token == "auto" \
                else FixedTreeBudget(total_token)
            self.proposer = TreeProposer(self.draft, budget, depth, top_k)
        self.lookup_tokens, self.lookup_first = lookup_tokens, lookup_first
        self.lookup_first_min_ngram = lookup_first_min_ngram
        self.free = FreeBranches(free_branches, runner.vocab_size, lookup_tokens, lookup_ngram) if lookup_tokens else None
        if self.free is not None and hasattr(self.free, "target_logits"):  # the matrix learns from every pass
            self.target_logits = self.free.target_logits
        self.round = Proposal.empty()
        self.drafted_this_round = False
        self.draft_seconds = 0.0
        self.counts: dict = {}

    @property
    def runner(self) -> LlamaRunner:
        return self.draft.runner

    @torch.inference_mode()
    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.reset_draft(prompt_ids)
        sources = self.free.sources if self.free is not None else ()
        if self.free is not None:
            self.free.reset(prompt_ids)
        # lookup_*: every free branch's nodes; free_*: per source (a node two sources found is the first's)
        self.counts = {"exit_tokens": {e: 0 for e in self.exits}, "exit_accepted": {e: 0 for e in self.exits},
                       "draft_tree_sizes": [], "skipped_rounds": 0, "lookup_tokens": 0, "lookup_accepted": 0,
                       "lookup_rounds": 0, "free_tokens": {s: 0 for s in sources},
                       "free_accepted": {s: 0 for s in sources}}

    def stats(self) -> dict:
        sizes = self.counts.get("draft_tree_sizes", [])
        out = {k: v for k, v in self.counts.items() if k != "draft_tree_sizes"}
        out["mean_draft_size"] = sum(sizes) / len(sizes) if sizes else 0.0
        budget = getattr(self.proposer, "budget", None)
        return {**out, **(budget.stats() if budget else {})}

    @torch.inference_mode()
    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        max_depth = max_depth or self.proposer.max_rows
        found = self.free.find(context, max_depth) if self.free is not None else []
        first = [c for c in found if c.match >= self.lookup_first_min_ngram] if self.lookup_first else []
        if first:  # free continuations after long enough matches: verify those alone, the draft rests
            self.counts["lookup_rounds"] += 1
            proposal, self.drafted_this_round, found = Proposal.empty(), False, first
        elif self.proposer.skip_round():  # auto mode found drafting slower than plain target steps lately
            self.counts["skipped_rounds"] += 1
            proposal, self.drafted_this_round = Proposal.empty(), False
        else:
            start = time.perf_counter()
            proposal, self.drafted_this_round = self.proposer.propose(context, max_depth, generator), True
            self.draft_seconds = time.perf_counter() - start
            for exit_ in proposal.exits:
                self.counts["exit_tokens"][exit_] += 1
            self.counts["draft_tree_sizes"].append(len(proposal.tokens))
        for continuation in found:  # longest match first
            proposal, added = proposal.with_branch(continuation.tokens, continuation.source)
            self.counts["lookup_tokens"] += added
            self.counts["free_tokens"][continuation.source] += added
        self.round = proposal
        return proposal.as_tree(context.device)

    @torch.inference_mode()
    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        """Keep the accepted path's draft rows next to the context; adapt length or budget."""
        proposal = self.round
        path = proposal.accepted_path(context[len(context) - num_new:][:num_drafted].tolist())
        for node in path:
            exit_ = proposal.exits[node]
            if not isinstance(exit_, int):  # a free branch's node
                self.counts["lookup_accepted"] += 1
                self.counts["free_accepted"][exit_] += 1
            else:
                self.counts["exit_accepted"][exit_] += 1
        if not self.drafted_this_round:
            return  # the draft ran nothing: accepted tokens reach its cache next round
        self.draft.keep_rows([proposal.rows[i] for i in path if proposal.rows[i] >= 0], len(context) - num_new)
        drafted = sum(i < proposal.drafted_nodes for i in path)  # accepted tokens the draft proposed
        self.proposer.round_done(proposal, drafted, self.draft_seconds)


def attached_exit_adapters(draft: torch.nn.Module, spec: DraftSpec) -> list[torch.nn.Module]:
    """The draft's exit adapters in the order of its exits (``sd2.exit_adapters``; loaded by
    ``load_sd2_drafter``)."""
    adapters = exit_adapters_of(draft)
    if adapters is None:
        raise ValueError("the draft's config.sd2 says it has exit adapters, but none are attached "
                         "(load it with load_sd2_drafter, which reads them from its folder)")
    return [adapters[str(k)] for k in spec.exits]


def load_sd2_drafter(drafter_path: str | Path, target: torch.nn.Module, target_tokenizer=None,
                     dtype: torch.dtype | None = None, draft_vocab_size: int | None = None, **kwargs) -> SD2Drafter:
    """Load a draft checkpoint (an HF folder), check it against the target, and build the drafter.

    ``kwargs`` go to :class:`SD2Drafter` (exits, thresholds, tree, int8_weights, ...); exits and
    thresholds default to the checkpoint's ``config.sd2``. ``int8_weights`` loads the draft in
    bfloat16 and quantises its layers and head to int8 (weight-only). ``draft_vocab_size`` keeps only that many of the
    checkpoint's draft vocabulary (0 = the full head).
    """
    path = Path(drafter_path)
    if draft_vocab_size is not None and draft_vocab_size < 0:
        raise ValueError(f"draft_vocab_size must be >= 0 (0: the full head), got {draft_vocab_size}")
    if kwargs.get("int8_weights"):
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f"int8 draft weights run with bfloat16 activations, not {dtype}")
        dtype = torch.bfloat16
    spec = None

    def check_spec(config):  # before any weights load
        nonlocal spec
        spec = DraftSpec.from_config(config, kwargs.get("exits"), kwargs.get("thresholds"))

    draft, config = load_draft(path, target, target_tokenizer, dtype, check_spec)
    if spec.exit_adapters:  # all that the folder holds, whichever exits run
        load_exit_adapters(draft, path, DraftSpec.from_config(config).exits)
    vocab = spec.load_vocab(path, draft_vocab_size) if draft_vocab_size != 0 else None
    return SD2Drafter(draft, draft_vocab=vocab, **kwargs)
