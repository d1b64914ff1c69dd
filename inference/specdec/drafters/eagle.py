"""EAGLE and EAGLE-2: a one-layer head drafts from the target's own features (``sd2.eagle_head``).

The head's rows are SD2's sorted-draft rows with one exit (``SortedDraft``: context rows, then a
round's tree rows that see the context and their ancestors), so both reuse the same proposers:
EAGLE's static tree (``StaticTreeProposer``: fixed rank paths) and EAGLE-2's dynamic tree
(``TreeProposer``: top-k children of the best frontier nodes by path probability, reranked to
``total_token``).

Rows. Context row t holds the pair (f_t, x_{t+1}): the target's feature of position t and the next
token, fused by the head, at position t. The engine hands the drafter a feature for every token
the target caches (``target_hidden``), so before a round the rows reach the root x_r through row
r - 1, whose output predicts f_r and so the token after the root. A tree row holds a drafted token
with its parent row's *predicted* feature. After verification the tree rows are dropped: the
accepted tokens come back as context rows with the target's true features.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from sd2.draft_spec import DRAFT_VOCAB_FILE, stored_draft_vocab
from sd2.eagle_head import QUALITY_REPORT_FILE, EagleHead, load_eagle_head

from ..llama import LlamaRunner
from ..static_passes import PASSES, STATIC_PASS_ROWS, StaticPasses
from .feature_drafter import FeatureTreeDrafter, reported_rank_accuracy, tree_proposer
from .sorted_draft import SortedDraft, SortedDraftDrafter

# Acceptance by rank (the head's top token, its second, ...) assumed for a static tree when the
# head's held-out report does not give them.
FALLBACK_RANK_ACCURACY = (0.5, 0.15, 0.08, 0.05)


def head_runner(head: EagleHead) -> LlamaRunner:
    """A runner over the head's one layer with the target's embedding, final norm and LM head."""
    embed, norm, lm_head = head._target
    model = SimpleNamespace(config=head.config, lm_head=lm_head,
                            model=SimpleNamespace(embed_tokens=embed, layers=[head.layer], norm=norm,
                                                  rotary_emb=head.rotary))
    return LlamaRunner(model)


class EagleDraft(SortedDraft):
    """The head's rows (see the module docstring); one exit, numbered 1."""

    make_runner = staticmethod(head_runner)  # EAGLE-3's head runs its own layer

    def __init__(self, head: EagleHead, vocab_ids: list[int] | None = None, branching: bool = True,
                 passes: str = "eager", max_draft_rows: int = 256):
        runner = self.make_runner(head)
        static = None if passes == "eager" else StaticPasses(  # as SD2's draft: a context, then a round's rows
            runner, runner.max_position + max_draft_rows + 1, STATIC_PASS_ROWS, cuda_graphs=passes == "cuda_graphs")
        super().__init__(runner, [1], [0.0], vocab_ids, branching, passes=static)
        self.head = head
        self.features = torch.empty(0, head.config.hidden_size, dtype=self.runner.dtype, device=self.runner.device)
        self.known = 0  # positions with a target feature

    def reset(self, prompt_len: int) -> None:
        super().reset(prompt_len)
        self.known = 0

    def add_features(self, hidden: torch.Tensor) -> None:
        n = hidden.shape[0]
        if self.known + n > self.features.shape[0]:
            grown = torch.empty(max(2 * self.features.shape[0], self.known + n, 256), hidden.shape[1],
                                dtype=self.features.dtype, device=self.features.device)
            grown[:self.known] = self.features[:self.known]
            self.features = grown
        self.features[self.known:self.known + n] = hidden
        self.known += n

    def feed_context(self, context: torch.Tensor, max_draft_rows: int) -> int:
        rows = context.numel() - 1  # row t pairs f_t with x_{t+1}: the last row ends at the root
        if self.known < rows:
            raise RuntimeError(f"EAGLE needs the target's features of {rows} positions, has {self.known}")
        self._allocate(rows + max_draft_rows + 1)
        c = self.context_rows
        self.tok[c:rows] = context[c + 1:rows + 1]
        self.pos[c:rows] = torch.arange(c, rows, device=context.device)
        self.feat[c:rows] = self.features[c:rows]
        self.context_rows, self.draft_rows = rows, 0
        self.anc = torch.zeros(max_draft_rows + 1, max_draft_rows + 1, dtype=torch.bool, device=context.device)
        return rows

    def append_rows(self, tokens: torch.Tensor, positions: torch.Tensor, parent_rows: list[int]) -> int:
        """A drafted token's row sits one position before the token (as context rows do) and reads
        its parent row's predicted feature (the root's row for a child of the root)."""
        start = self.context_rows + self.draft_rows
        upto = super().append_rows(tokens, positions - 1, parent_rows)
        parents = torch.tensor([self.context_rows + p if p >= 0 else self.context_rows - 1 for p in parent_rows],
                               device=self.feat.device)
        self.feat[start:upto] = self.pred[parents]
        return upto

    def _inputs(self, g: int, lo: int, hi: int) -> torch.Tensor:
        return self.head.fuse(self.tok[lo:hi], self.feat[lo:hi])[None]

    def _reads_hidden(self, g: int) -> bool:
        return True

    def _keep_output(self, g: int, a: int, upto: int, h: torch.Tensor) -> None:
        self.pred[a:upto] = h[0]  # the predicted features a child row reads

    def _allocate(self, rows: int) -> None:
        old = self.capacity
        super()._allocate(rows)
        if self.capacity != old:  # the feature buffers grow with the rows
            hidden, dtype, device = self.head.config.hidden_size, self.runner.dtype, self.runner.device
            feat, pred = (torch.zeros(self.capacity, hidden, dtype=dtype, device=device) for _ in range(2))
            if old:
                feat[:old], pred[:old] = self.feat, self.pred
            self.feat, self.pred = feat, pred


class EagleDrafter(FeatureTreeDrafter, SortedDraftDrafter):
    """EAGLE (``tree='static'``: a fixed tree of rank paths) or EAGLE-2 (``tree='dynamic'``)."""

    def __init__(self, head: EagleHead, tree: str = "dynamic", total_token: int = 60, depth: int = 5,
                 top_k: int = 10, rank_accuracy: list[float] | None = None, draft_vocab: list[int] | None = None,
                 passes: str = "eager"):
        if passes not in PASSES:
            raise ValueError(f"passes must be one of {PASSES}, got {passes!r}")
        super().__init__()
        self.draft = self._new_draft(head, draft_vocab, passes, max(total_token, depth * top_k))
        # EAGLE-2's depth counts expansions after the first top-k; a static tree's, drafted tokens
        self.proposer = tree_proposer(self.draft, tree, total_token, depth + 1 if tree == "dynamic" else depth, top_k,
                                      rank_accuracy or FALLBACK_RANK_ACCURACY)

    def _new_draft(self, head, draft_vocab, passes: str, max_draft_rows: int) -> EagleDraft:
        return EagleDraft(head, draft_vocab, passes=passes, max_draft_rows=max_draft_rows)

    @torch.inference_mode()
    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.reset_draft(prompt_ids)
        self.start_counts()

    @torch.inference_mode()
    def target_hidden(self, hidden: torch.Tensor) -> None:
        self.draft.add_features(hidden.to(self.draft.features.dtype))

    def ready(self, context: torch.Tensor) -> bool:
        return context.numel() >= 2

    def end_round(self) -> None:
        self.draft.keep_rows([], self.draft.context_rows)  # tree rows go: true features replace them


def load_eagle_drafter(head_path: str | Path, target: torch.nn.Module, dtype: torch.dtype | None = None,
                       rank_accuracy: list[float] | None = None, draft_vocab_size: int | None = None,
                       **kwargs) -> EagleDrafter:
    """A saved head (refused unless trained for ``target``) as a drafter.

    The head scores the draft vocabulary in ``draft_vocab.json`` beside it when there is one (token
    ids, most frequent first; ``draft_vocab_size``: only the first N, 0: the target's whole
    vocabulary): EAGLE-3's reduced head, as SD2's draft has. A static tree's rank accuracies default
    to those measured in the head's held-out report (``eagle_quality.json`` beside it, written by
    ``sd2train.exit_quality --eagle``: how often the target's token is the head's k-th choice, the
    reduced head's when one is scored), else ``FALLBACK_RANK_ACCURACY`` (no report, or one written
    before rank accuracies were measured: rerun the report).
    """
    head_path = Path(head_path)
    head = load_eagle_head(head_path, target, dtype)
    entry = head.signature
    if "draft_vocab_file" not in entry and (head_path / DRAFT_VOCAB_FILE).is_file():  # saved before configs named it
        entry = {"draft_vocab_file": DRAFT_VOCAB_FILE}
    vocab = stored_draft_vocab(head_path, entry, target.config.vocab_size) if draft_vocab_size != 0 else None
    if vocab is not None:
        if draft_vocab_size:
            if draft_vocab_size > len(vocab):
                raise ValueError(f"draft vocabulary size {draft_vocab_size} exceeds {head_path / entry['draft_vocab_file']} "
                                 f"({len(vocab)} ids)")
            vocab = vocab[:draft_vocab_size]
    elif draft_vocab_size:
        raise ValueError(f"--draft-vocab-size {draft_vocab_size}: {head_path} has no {DRAFT_VOCAB_FILE}")
    if rank_accuracy is None and kwargs.get("tree") == "static":
        rank_accuracy = reported_rank_accuracy(head_path / QUALITY_REPORT_FILE,
                                               "rank_accuracy_draft_vocab" if vocab else "rank_accuracy")
    return EagleDrafter(head, rank_accuracy=rank_accuracy, draft_vocab=vocab, **kwargs)
