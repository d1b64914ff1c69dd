"""How well a predictor (a draft's exits, an EAGLE or EAGLE-3 head) agrees with the target along
sequences: top-1 agreement, top-4 recall, rank accuracies, confidences, cross-entropy; and the
tables the reports print."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sd2train.exits import all_exit_logits, exit_logits, last_layer_states
from sd2train.report_text import prompt_set_title
from sd2train.thresholds import cascade, choose_thresholds, speed_thresholds

RANKS = 4  # rank accuracies measured: the target's token as the predictor's 1st .. 4th choice


class AgreementStats:
    """One predictor's (an exit's, or an EAGLE head's) statistics against the target, position by
    position. With ``vocab_ids`` (a draft vocabulary) also those of a head covering only those tokens."""

    def __init__(self, vocab_ids: torch.Tensor | None = None):
        self.vocab_ids = vocab_ids
        self.parts: dict[str, list[torch.Tensor]] = {name: [] for name in (
            "top1_prob", "right", "rank_hits", "ce", "nll", "right_draft_vocab", "rank_hits_draft_vocab")}

    def add(self, logits: torch.Tensor, target_log_probs: torch.Tensor) -> None:
        """``logits`` and ``target_log_probs`` (positions, vocab) for the same next tokens."""
        log_q = F.log_softmax(logits.float(), -1)
        target_top1 = target_log_probs.argmax(-1)
        top_log_q, top = log_q.max(-1)
        self.parts["top1_prob"].append(top_log_q.exp())
        self.parts["right"].append(top == target_top1)
        # Whether the target's token is the predictor's k-th choice, k = 1..4: the rates a static
        # tree is built from; any of them is top-4 recall (what a tree can still draft).
        self.parts["rank_hits"].append(log_q.topk(RANKS, -1).indices == target_top1[:, None])
        self.parts["ce"].append(-(target_log_probs.exp() * log_q).sum(-1))
        self.parts["nll"].append(-log_q.gather(-1, target_top1[:, None])[:, 0])
        if self.vocab_ids is not None:
            sub_top = self.vocab_ids[log_q[:, self.vocab_ids].topk(RANKS, -1).indices]
            self.parts["right_draft_vocab"].append(sub_top[:, 0] == target_top1)
            self.parts["rank_hits_draft_vocab"].append(sub_top == target_top1[:, None])

    def cat(self, name: str) -> torch.Tensor:
        return torch.cat(self.parts[name])

    def summary(self) -> dict:
        ok, p, hits = self.cat("right"), self.cat("top1_prob"), self.cat("rank_hits")
        result = {
            "top1_agreement": float(ok.float().mean()),
            "top4_recall": float(hits.any(-1).float().mean()),
            "rank_accuracy": hits.double().mean(0).tolist(),
            "mean_top1_prob_right": float(p[ok].mean()) if ok.any() else None,
            "mean_top1_prob_wrong": float(p[~ok].mean()) if (~ok).any() else None,
            "cross_entropy_to_target": float(self.cat("ce").mean()),
            "nll_of_target_token": float(self.cat("nll").mean()),
        }
        if self.vocab_ids is not None:
            hits = self.cat("rank_hits_draft_vocab")
            result["top1_agreement_draft_vocab"] = float(self.cat("right_draft_vocab").float().mean())
            result["top4_recall_draft_vocab"] = float(hits.any(-1).float().mean())
            result["rank_accuracy_draft_vocab"] = hits.double().mean(0).tolist()
        return result


@torch.no_grad()
def measure_agreement(target, sequences, prompt_lengths, names, predict, vocab_ids=None,
                      desc: str = "exit quality") -> dict:
    """{name: AgreementStats} over every continuation position of every sequence, teacher-forced.
    ``predict(ids, span, features)`` returns {name: logits (positions, vocab)} for the tokens that
    follow positions ``span`` of ``ids`` (1, L); ``features`` are the target's last-layer states
    (before its final norm) of ``ids``, whose norm and head give the target's own logits."""
    from tqdm import tqdm

    stats = {name: AgreementStats(vocab_ids) for name in names}
    for seq, prompt_len in tqdm(list(zip(sequences, prompt_lengths)), desc=desc, unit="seq"):
        if len(seq) <= prompt_len:
            continue
        ids = torch.tensor([seq])
        span = slice(prompt_len - 1, len(seq) - 1)  # positions whose next token is generated
        features = last_layer_states(target, ids)
        target_log_probs = F.log_softmax(exit_logits(target, features[0, span]).float(), -1)
        for name, logits in predict(ids, span, features).items():
            stats[name].add(logits, target_log_probs)
    return stats


def evaluate_exits(draft, target, sequences, prompt_lengths, exits, vocab_ids=None, exit_costs=None) -> dict:
    """Per-exit statistics over every continuation position of every sequence. With ``vocab_ids``
    (the draft vocabulary) also the agreement of an exit whose head covers only those tokens."""

    def exits_at(ids, span, _features):
        return {k: logits[0] for k, logits in all_exit_logits(draft, exits, ids, positions=span).items()}

    stats = measure_agreement(target, sequences, prompt_lengths, exits, exits_at, vocab_ids)
    probs = {k: s.cat("top1_prob") for k, s in stats.items()}
    right = {k: s.cat("right") for k, s in stats.items()}
    thresholds = choose_thresholds(probs, right)
    report = {"positions": int(right[exits[0]].numel()), "per_exit": {k: s.summary() for k, s in stats.items()},
              "suggested_thresholds": thresholds, "cascade_suggested": cascade(probs, right, thresholds)}
    if exit_costs:
        report["speed_suggested"] = speed_thresholds(probs, right, exit_costs)
    return report


def evaluate_eagle(head, target, sequences, prompt_lengths, vocab_ids=None) -> dict:
    """An EAGLE head's statistics at depth 1, the first token it drafts after a verification: to
    predict the token after position p it reads the true feature f_{p-1} and token x_p (its row
    p-1 predicts f_p), and its earlier rows read true features too. With ``vocab_ids`` (the draft
    vocabulary beside the head) also those of the reduced head inference scores."""

    def first_draft_token(ids, span, features):
        if span.start < 1:
            raise ValueError("an EAGLE head needs a prompt of at least 2 tokens")
        predicted = head(ids[:, 1:], features[:, :-1])  # row t: f_{t+1} from x_{t+1} and f_t
        return {1: head.logits(predicted[0, span.start - 1:span.stop - 1])}

    stats = measure_agreement(target, sequences, prompt_lengths, [1], first_draft_token, vocab_ids, "eagle head")[1]
    return {"positions": int(stats.cat("right").numel()), **stats.summary()}


def evaluate_eagle3(head, target, sequences, prompt_lengths, depths=(1, 2, 3)) -> dict:
    """An EAGLE-3 head's statistics at each depth k: to predict the token after position p it
    reads the target's fused features at p - k and the tokens up to p, unrolled k steps over its
    own outputs (``Eagle3Head.unroll``: what a depth-k tree node reads when its ancestors are
    right). Depth 1 is the first token drafted after a verification. The head scores the draft
    vocabulary only: its logits are -inf elsewhere, so both columns are the reduced head's."""
    from sd2train.exits import target_states

    def unrolled(ids, span, _features):
        if span.start < max(depths):
            raise ValueError(f"an EAGLE-3 head at depth {max(depths)} needs prompts of at least {max(depths) + 1} tokens")
        features, _ = target_states(target, head.feature_layers, ids)
        outputs = head.unroll(ids, features, max(depths))
        result = {}
        for k in depths:
            scores = head.logits(outputs[k - 1][0, span.start - k:span.stop - k]).float()
            full = scores.new_full((scores.shape[0], target.config.vocab_size), float("-inf"))
            full[:, head.vocab_ids] = scores
            result[k] = full
        return result

    stats = measure_agreement(target, sequences, prompt_lengths, list(depths), unrolled, head.vocab_ids,
                              "eagle-3 head")
    # Cross-entropy and NLL are infinite wherever the target's token is outside the draft vocabulary.
    finite = lambda row: {k: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
                          for k, v in row.items()}
    return {"positions": int(stats[depths[0]].cat("right").numel()),
            "per_depth": {k: finite(s.summary()) for k, s in stats.items()}}


def agreement_table(rows: dict, label: str) -> list[str]:
    """A header and one line per predictor (an exit, an EAGLE depth) of AgreementStats' summaries."""
    width = max(len(label), *(len(str(k)) for k in rows))
    lines = [f"{label:>{width}} {'top-1 agree':>11} {'top-4 recall':>12} {'p(top1)|right':>13} {'p(top1)|wrong':>13} "
             f"{'CE to target':>12} {'NLL tgt tok':>11} {'agree / top-4 (draft vocab)':>27}"]
    fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
    pct = lambda v: f"{v:.1%}" if v is not None else "-"  # noqa: E731
    for k, row in rows.items():
        draft_vocab = f"{pct(row.get('top1_agreement_draft_vocab'))} / {pct(row.get('top4_recall_draft_vocab'))}"
        lines.append(f"{k!s:>{width}} {row['top1_agreement']:>11.1%} {pct(row.get('top4_recall')):>12} "
                     f"{fmt(row['mean_top1_prob_right']):>13} "
                     f"{fmt(row['mean_top1_prob_wrong']):>13} {fmt(row['cross_entropy_to_target']):>12} "
                     f"{fmt(row['nll_of_target_token']):>11} {draft_vocab:>27}")
    return lines


def format_table(report: dict) -> str:
    lines = [f"exit quality of {report['draft']} vs {report['target']} ({prompt_set_title(report)})",
             *agreement_table(report["per_exit"], "exit")]
    c = report["cascade_suggested"]
    lines.append(f"suggested thresholds {c['thresholds']}: adaptive-exit agreement {c['agreement']:.1%}, "
                 f"share per exit {({k: round(v, 3) for k, v in c['share_per_exit'].items()})}")
    if "speed_suggested" in report:
        v = report["speed_suggested"]
        alone = ", ".join(f"exit {k} alone {x:.2f}x" for k, x in v["estimated_speedup_alone"].items())
        lines.append(f"for speed (cost per draft token {v['exit_costs']} target steps): thresholds {v['thresholds']}, "
                     f"agreement {v['agreement']:.1%}, mean cost {v['mean_cost']:.3f}, estimated "
                     f"{v['estimated_speedup']:.2f}x with chains of {v['chain_length']} ({alone})")
    return "\n".join(lines)
