"""Exit-quality report: how well each exit of a draft predicts its target's greedy next token.

    python -m sd2train.exit_quality --draft models/sd2-draft-soft-12 [--prompts 32 --new-tokens 64]
    python -m sd2train.exit_quality --draft models/smollm2-135m-instruct --layers 12   # untrained

Held-out ShareGPT prompts (first user turn, never trained on) are continued greedily by the target.
Along the target's own continuation, per exit: top-1 agreement with the target's greedy next
token (the acceptance proxy SD2 depends on), top-4 recall (the target's token among the exit's 4
best: what a tree can still draft) and its parts, the rank accuracies ("rank_accuracy": how
often the target's token is the exit's k-th choice, k = 1..4), the exit's mean top-1 probability
when right and when wrong, the cross-entropy to the target's distribution and the NLL of the
target's token. It also suggests per-exit confidence thresholds: the lowest at which an exit
agrees with the target at least as often as the last exit does on the same tokens. Prints a
table; writes JSON: the draft's own ``exit_quality.json`` on the standard 32 prompts, and beside
it, never over it, a report on another number of prompts (``--prompts 8``:
``exit_quality-n8.json``) or other prompt lengths.

    python -m sd2train.exit_quality --eagle models/eagle-smollm2-135m

measures an EAGLE head (``sd2train.eagle``) on the same prompts and positions instead: the token it
drafts first after a verification (depth 1), teacher-forced with the target's true features; an
EAGLE-3 head (``sd2train.eagle3``) at depths 1, 2 and 3 (the head unrolled over its own outputs).
Its rank accuracies (per depth for EAGLE-3; ``_draft_vocab``: the reduced head's) are what
``specdec.drafters.eagle`` builds EAGLE's static tree from.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sd2.draft_spec import DraftSpec, drafts_at, validate_exits
from sd2.eagle_head import QUALITY_REPORT_FILE as EAGLE_REPORT_FILE
from sd2.paths import REPO_ROOT
from sd2.spec_bench import TASKS, task_of
from sd2train.errors import InputError, run_cli
from sd2train.exits import all_exit_logits, exit_logits, last_layer_states, parse_int_list

REPORT_FILE = "exit_quality.json"
DEFAULT_PROMPTS = 32  # the standard prompt set: a model's own report (the trainers' default too)
CACHE_DIR = REPO_ROOT / "outputs" / "exit_quality_cache"
THRESHOLD_GRID = [round(0.05 * i, 2) for i in range(1, 20)]
RANKS = 4  # rank accuracies measured: the target's token as the predictor's 1st .. 4th choice


def heldout_prompts(tokenizer, fmt, num_prompts: int, max_prompt_tokens: int, data_path=None,
                    heldout_fraction: float = 0.02, min_prompt_tokens: int = 0) -> list[list[int]]:
    """Token ids of the first user turn of held-out conversations, as generation prompts, those of
    ``min_prompt_tokens`` to ``max_prompt_tokens`` tokens."""
    from sd2train.data import load_sharegpt, split_train_heldout
    from sd2train.preprocess import chat_turns

    conversations, _ = load_sharegpt(data_path, verbose=False)
    _, heldout = split_train_heldout(conversations, heldout_fraction)
    prompts = []
    for conv in heldout:
        shaped = chat_turns(conv["messages"])
        if shaped is None or not shaped[1][0]["content"].strip():
            continue
        text = fmt.prompt(shaped[0], shaped[1][:1])
        ids = tokenizer(text, add_special_tokens=fmt.add_special_tokens)["input_ids"]
        if min_prompt_tokens <= len(ids) <= max_prompt_tokens:
            prompts.append(ids)
        if len(prompts) == num_prompts:
            break
    if not prompts:
        raise ValueError(f"no held-out prompt has {min_prompt_tokens} to {max_prompt_tokens} tokens")
    return prompts


@torch.no_grad()
def greedy_continuations(target, tokenizer, prompts, new_tokens: int, batch_size: int = 8) -> list[list[int]]:
    """prompt + the target's greedy continuation (up to its stop token), one list per prompt."""
    from tqdm import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = target.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    sequences = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="target greedy", unit="batch"):
        batch = prompts[start:start + batch_size]
        width = max(map(len, batch))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        out = target.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=pad)
        for prompt, row in zip(batch, out[:, width:].tolist()):
            cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            sequences.append(prompt + row[:cut])
    return sequences


def cached_continuations(target_name: str, target, tokenizer, prompts, new_tokens: int) -> list[list[int]]:
    """Greedy continuations are deterministic for a target and prompt set: compute them once."""
    name = str(Path(target_name).resolve()) if Path(target_name).exists() else str(target_name)
    key = hashlib.sha256(json.dumps([name, new_tokens, prompts]).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    sequences = greedy_continuations(target, tokenizer, prompts, new_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sequences))
    return sequences


def answer_sequences(answer_file, question_file, tokenizer, fmt) -> dict[str, tuple[list, list]]:
    """Per task: (prompt + greedy answer token ids, prompt lengths) of the first turns in a float32
    greedy answer file of the evaluation harness (e.g. AR's). Measures the exits on the text they
    will draft at evaluation time; nothing is trained on it."""
    questions = {}
    for line in Path(question_file).read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            questions[q["question_id"]] = q
    by_task: dict[str, tuple[list, list]] = {}
    for line in Path(answer_file).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        choice = record["choices"][0]
        if "error" in record or not choice.get("token_ids"):
            continue
        if record.get("settings", {}).get("temperature", 0) != 0:
            raise ValueError(f"{answer_file}: answers were sampled; the report needs greedy ones (AR, float32)")
        question = questions.get(record["question_id"])
        if question is None:
            raise ValueError(f"{answer_file}: question {record['question_id']} is not in {question_file}")
        text = fmt.prompt(None, [{"role": "user", "content": question["turns"][0]}])
        prompt = tokenizer(text, add_special_tokens=fmt.add_special_tokens)["input_ids"]
        sequences, lengths = by_task.setdefault(task_of(record["category"]), ([], []))
        sequences.append(prompt + choice["token_ids"][0])
        lengths.append(len(prompt))
    if not by_task:
        raise ValueError(f"{answer_file}: no answered question with token ids")
    return by_task


def choose_thresholds(top1_prob: dict[int, torch.Tensor], right: dict[int, torch.Tensor]) -> list[float]:
    """Per exit but the last: the lowest grid threshold at which tokens the exit is that sure of
    are right at least as often as the last exit is on them. The last exit's threshold is 0."""
    exits = sorted(top1_prob)
    last = exits[-1]
    thresholds = []
    for k in exits[:-1]:
        chosen = THRESHOLD_GRID[-1]
        for tau in THRESHOLD_GRID:
            sure = top1_prob[k] > tau
            if sure.any() and right[k][sure].float().mean() >= right[last][sure].float().mean():
                chosen = tau
                break
        thresholds.append(chosen)
    return thresholds + [0.0]


def cascade(top1_prob, right, thresholds) -> dict:
    """Adaptive exit selection: each token is drafted at the exit the draft's rule picks
    (``sd2.draft_spec.drafts_at``: the first exit surer than its threshold; the last one's is 0)."""
    exits = sorted(top1_prob)
    n = next(iter(right.values())).numel()
    chosen_right = torch.zeros(n, dtype=torch.bool)
    undecided = torch.ones(n, dtype=torch.bool)
    share = {}
    for k, tau in zip(exits, thresholds):
        stop = undecided & drafts_at(top1_prob[k], tau)
        chosen_right |= stop & right[k]
        share[k] = float(stop.float().mean())
        undecided &= ~stop
    return {"thresholds": thresholds, "agreement": float(chosen_right.float().mean()), "share_per_exit": share}


def estimated_speedup(agreement: float, cost: float, max_len: int = 8) -> tuple[float, int]:
    """(speed-up over plain decoding, chain length) of the best chain under a simple model: each
    drafted token is kept with probability ``agreement`` until the first miss, costs ``cost``
    target steps to draft, and verifying a few tokens costs one step (true of a GPU and of a CPU
    up to ~4 tokens): (1 + a + ... + a^L) / (1 + L c) at its best L."""
    best = (1.0, 0)
    for length in range(1, max_len + 1):
        tokens = sum(agreement ** i for i in range(length + 1))
        best = max(best, (tokens / (1 + length * cost), length))
    return best


def speed_thresholds(top1_prob: dict[int, torch.Tensor], right: dict[int, torch.Tensor],
                     exit_costs: dict[int, float]) -> dict:
    """The thresholds (0 or a grid value per early exit; 0 sends every token to that exit) whose
    cascade has the best estimated speed-up, given each exit's cost per draft token in target
    steps; and each exit's own estimate when it drafts alone."""
    exits = sorted(top1_prob)
    best = None
    for combo in itertools.product([0.0, *THRESHOLD_GRID], repeat=len(exits) - 1):
        result = cascade(top1_prob, right, [*combo, 0.0])
        mean_cost = sum(result["share_per_exit"][k] * exit_costs[k] for k in exits)
        speedup, length = estimated_speedup(result["agreement"], mean_cost)
        if best is None or speedup > best["estimated_speedup"]:
            best = {**result, "mean_cost": mean_cost, "estimated_speedup": speedup, "chain_length": length}
    alone = {k: estimated_speedup(float(right[k].float().mean()), exit_costs[k])[0] for k in exits}
    return {**best, "exit_costs": exit_costs, "estimated_speedup_alone": alone}


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


def prompt_set_title(report: dict) -> str:
    low, high = report.get("prompt_tokens", [0, "?"])
    return f"{report['prompts']} held-out prompts of {low}-{high} tokens, {report['positions']} positions"


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


def load_draft(draft_path, layers: int | None) -> tuple[torch.nn.Module, DraftSpec | None]:
    """(draft model in float32, its spec; None for a target truncated to ``layers``, which gets
    the default exits for that depth)."""
    from transformers import AutoModelForCausalLM

    from sd2train.make_draft import truncate_to_first_layers

    model = AutoModelForCausalLM.from_pretrained(draft_path, dtype=torch.float32).eval()
    if layers is not None:
        truncate_to_first_layers(model, layers)
        return model, None
    if not getattr(model.config, "sd2", None):
        raise ValueError(f"{draft_path} is not a draft (no sd2 entry in its config): pass --layers N "
                         "to measure the target's first N layers untrained")
    return model, DraftSpec.from_config(model.config)


@dataclass
class Measured:
    """A draft, the exits to measure, and the target they are measured against (float32)."""

    draft: torch.nn.Module
    spec: DraftSpec | None  # None: a target truncated to --layers, untrained
    exits: list[int]
    target_path: str
    target: torch.nn.Module
    tokenizer: object
    vocab_ids: torch.Tensor | None  # the draft vocabulary, if the draft has one


def load_measured(draft_path, target_path=None, exits=None, layers=None) -> Measured:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    draft, spec = load_draft(draft_path, layers)
    exits = validate_exits(exits or (spec or DraftSpec.from_config(draft.config)).exits,
                           draft.config.num_hidden_layers)
    target_path = str(target_path or (spec.target if spec else draft_path))
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=torch.float32).eval()
    vocab = spec.load_vocab(draft_path) if spec else None
    return Measured(draft, spec, exits, target_path, target, AutoTokenizer.from_pretrained(target_path),
                    torch.tensor(vocab) if vocab is not None else None)


def heldout_sequences(target_path, target, tokenizer, conv_template, num_prompts: int, new_tokens: int,
                      max_prompt_tokens: int, min_prompt_tokens: int = 0, data_path=None,
                      heldout_fraction: float = 0.02) -> tuple[list[list[int]], list[list[int]]]:
    """(held-out prompts, each continued greedily by the target): the text both reports measure on."""
    from sd2train.preprocess import get_format

    prompts = heldout_prompts(tokenizer, get_format(conv_template, tokenizer), num_prompts, max_prompt_tokens,
                              data_path, heldout_fraction, min_prompt_tokens)
    return prompts, cached_continuations(target_path, target, tokenizer, prompts, new_tokens)


def report_name(standard: str, min_prompt_tokens: int, max_prompt_tokens: int,
                prompt_count: int | None = None) -> str:
    """The standard prompt set's report is the model's own; another prompt set's goes beside it:
    other prompt lengths (``-prompts-MIN-MAX``), or, with ``prompt_count``, another number of
    prompts (``-nN``: the command line's --prompts other than the default)."""
    name = Path(standard).stem
    if min_prompt_tokens != 0:
        name += f"-prompts-{min_prompt_tokens}-{max_prompt_tokens}"
    if prompt_count is not None:
        name += f"-n{prompt_count}"
    return f"{name}.json"


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2))
    print(f"report written to {path}")


def count_in_report_name(num_prompts: int) -> int | None:
    """For the command lines: a run on a number of prompts other than the default writes its report
    under a name that says the count, never over the model's own report."""
    if num_prompts < 1:
        raise InputError(f"--prompts must be >= 1 (the number of held-out prompts to measure on), got {num_prompts}")
    return None if num_prompts == DEFAULT_PROMPTS else num_prompts


def exit_quality(draft_path, target_path=None, exits=None, layers=None, num_prompts: int = 32,
                 new_tokens: int = 64, max_prompt_tokens: int = 192, data_path=None,
                 conv_template=None, write: bool = True, update_thresholds: bool = False,
                 heldout_fraction: float = 0.02, min_prompt_tokens: int = 0,
                 exit_costs: list[float] | None = None, draft_vocab_size: int | None = None,
                 prompt_count_in_name: int | None = None) -> dict:
    """The held-out report (see the module's docstring); ``exit_costs`` (one per exit, in target
    steps per draft token) adds the thresholds suggested for speed; ``draft_vocab_size`` measures
    the draft head over the first N ids of the draft vocabulary (inference's ``--draft-vocab-size``),
    written beside the standard report, as is a report whose ``prompt_count_in_name`` is given."""
    started = time.time()
    m = load_measured(draft_path, target_path, exits, layers)
    if draft_vocab_size is not None:
        if m.vocab_ids is None or not 0 < draft_vocab_size <= len(m.vocab_ids):
            have = "no draft vocabulary" if m.vocab_ids is None else f"a draft vocabulary of {len(m.vocab_ids)}"
            raise ValueError(f"--draft-vocab-size {draft_vocab_size}: {draft_path} has {have}")
        m.vocab_ids = m.vocab_ids[:draft_vocab_size]  # the most frequent first, as make_draft writes them
    exits = m.exits
    if exit_costs is not None and (len(exit_costs) != len(exits) or min(exit_costs) < 0):
        raise ValueError(f"{len(exit_costs)} exit costs for {len(exits)} exits {exits}: give one cost >= 0 per exit")
    prompts, sequences = heldout_sequences(m.target_path, m.target, m.tokenizer, conv_template, num_prompts,
                                           new_tokens, max_prompt_tokens, min_prompt_tokens, data_path, heldout_fraction)
    report = {"draft": str(draft_path), "target": m.target_path, "exits": exits, "prompts": len(prompts),
              "prompt_tokens": [min_prompt_tokens, max_prompt_tokens], "new_tokens": new_tokens}
    report.update(evaluate_exits(m.draft, m.target, sequences, [len(p) for p in prompts], exits, m.vocab_ids,
                                 dict(zip(exits, exit_costs)) if exit_costs else None))
    if m.vocab_ids is not None:
        report["draft_vocab_size"] = len(m.vocab_ids)
    report["seconds"] = round(time.time() - started, 1)
    print(format_table(report))
    if write and layers is None:
        name = report_name(REPORT_FILE, min_prompt_tokens, max_prompt_tokens, prompt_count_in_name)
        if draft_vocab_size is not None:
            name = f"{Path(name).stem}-vocab-{draft_vocab_size}.json"
        write_report(Path(draft_path, name), report)
        if update_thresholds and exits == m.spec.exits and min_prompt_tokens == 0 and draft_vocab_size is None:
            chosen = report["speed_suggested"]["thresholds"] if exit_costs else report["suggested_thresholds"]
            write_thresholds(draft_path, chosen)
    return report


def agreement_on_answers(by_task: dict, evaluate, names: list) -> dict:
    """{"tasks": {task: answers, positions, top1_agreement and top4_recall per name}, "overall": the
    position-weighted means}; ``evaluate(sequences, prompt_lengths)`` -> (positions, {name: (top-1, top-4)})."""
    tasks = [t for t in TASKS if t in by_task] + sorted(set(by_task) - set(TASKS))
    report = {"tasks": {}}
    for task in tasks:
        sequences, lengths = by_task[task]
        positions, rates = evaluate(sequences, lengths)
        report["tasks"][task] = {"answers": len(sequences), "positions": positions,
                                 "top1_agreement": {k: top1 for k, (top1, _) in rates.items()},
                                 "top4_recall": {k: top4 for k, (_, top4) in rates.items()}}
    positions = sum(r["positions"] for r in report["tasks"].values())
    report["overall"] = {metric: {k: sum(r[metric][k] * r["positions"] for r in report["tasks"].values()) / positions
                                  for k in names} for metric in ("top1_agreement", "top4_recall")}
    report["positions"] = positions
    return report


def format_task_table(title: str, report: dict, columns: dict) -> str:
    """``columns``: {name in the report: its column heading}."""
    lines = [title, f"{'task':<16}{'answers':>8}{'positions':>10}  " + "  ".join(f"{c:>13}" for c in columns.values())]
    overall = {**report["overall"], "answers": "", "positions": report["positions"]}
    for task, r in [*report["tasks"].items(), ("overall", overall)]:
        cells = "  ".join(f"{r['top1_agreement'][k]:6.1%} /{r['top4_recall'][k]:6.1%}" for k in columns)
        lines.append(f"{task:<16}{r['answers']!s:>8}{r['positions']!s:>10}  {cells}")
    return "\n".join(lines)


def exit_quality_on_answers(draft_path, answer_file, question_file=None, exits=None, conv_template=None) -> dict:
    """Per Spec-Bench task: each exit's agreement with (and top-4 recall of) the target's greedy
    tokens in an answer file, teacher-forced along those answers."""
    from sd2.paths import SPEC_BENCH_QUESTIONS
    from sd2train.preprocess import get_format

    m = load_measured(draft_path, exits=exits)
    exits, vocab_ids = m.exits, m.vocab_ids
    by_task = answer_sequences(answer_file, question_file or SPEC_BENCH_QUESTIONS, m.tokenizer,
                               get_format(conv_template, m.tokenizer))
    key = "_draft_vocab" if vocab_ids is not None else ""

    def evaluate(sequences, lengths):
        result = evaluate_exits(m.draft, m.target, sequences, lengths, exits, vocab_ids)
        return result["positions"], {k: (r[f"top1_agreement{key}"], r[f"top4_recall{key}"])
                                     for k, r in result["per_exit"].items()}

    report = {"draft": str(draft_path), "answer_file": str(answer_file), "exits": exits,
              **agreement_on_answers(by_task, evaluate, exits)}
    print(format_task_table(f"exit agreement of {draft_path} along {answer_file} (first turns, teacher-forced; "
                            f"{'draft' if vocab_ids is not None else 'full'}-vocabulary head): top-1 / top-4 per exit",
                            report, {k: f"exit {k}" for k in exits}))
    return report


@dataclass
class MeasuredHead:
    """An EAGLE head, its target (both float32) and the draft vocabulary beside the head, if any."""

    head: torch.nn.Module
    target_path: str
    target: torch.nn.Module
    tokenizer: object
    vocab_ids: torch.Tensor | None
    eagle3: bool = False  # an EAGLE-3 head (sd2train.eagle3), measured at depths 1..3


def load_measured_head(head_path, target_path=None) -> MeasuredHead:
    """The target defaults to the one the head names; a head for another target is refused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sd2.draft_spec import DRAFT_VOCAB_FILE
    from sd2.eagle3_head import CONFIG_KEY as EAGLE3_KEY, load_eagle3_head
    from sd2.eagle_head import CONFIG_KEY, load_eagle_head

    config_file = Path(head_path, "config.json")
    if not config_file.is_file():
        raise ValueError(f"no EAGLE head at {head_path} (config.json missing)")
    config = json.loads(config_file.read_text())
    eagle3 = EAGLE3_KEY in config
    target_path = str(target_path or config.get(EAGLE3_KEY if eagle3 else CONFIG_KEY, {}).get("target") or "")
    if not target_path:
        raise ValueError(f"{head_path} names no target: pass --target")
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=torch.float32).eval()
    if eagle3:
        head = load_eagle3_head(head_path, target, torch.float32)
        return MeasuredHead(head, target_path, target, AutoTokenizer.from_pretrained(target_path), head.vocab_ids, True)
    head = load_eagle_head(head_path, target, torch.float32)
    vocab_file = Path(head_path, DRAFT_VOCAB_FILE)
    vocab_ids = torch.tensor(json.loads(vocab_file.read_text())) if vocab_file.is_file() else None
    return MeasuredHead(head, target_path, target, AutoTokenizer.from_pretrained(target_path), vocab_ids)


def eagle_quality(head_path, target_path=None, num_prompts: int = 32, new_tokens: int = 64,
                  max_prompt_tokens: int = 192, data_path=None, conv_template=None, write: bool = True,
                  heldout_fraction: float = 0.02, min_prompt_tokens: int = 0,
                  prompt_count_in_name: int | None = None) -> dict:
    """An EAGLE head's held-out report: on the draft report's prompts and positions, its depth-1
    agreement with the target's greedy token (teacher-forced with the target's true features)."""
    started = time.time()
    m = load_measured_head(head_path, target_path)
    prompts, sequences = heldout_sequences(m.target_path, m.target, m.tokenizer, conv_template, num_prompts,
                                           new_tokens, max_prompt_tokens, min_prompt_tokens, data_path,
                                           heldout_fraction)
    report = {"head": str(head_path), "target": m.target_path, "prompts": len(prompts),
              "prompt_tokens": [min_prompt_tokens, max_prompt_tokens], "new_tokens": new_tokens}
    lengths = [len(p) for p in prompts]
    if m.eagle3:  # depth 1's figures also at the top level, where EAGLE's report has them
        measured = evaluate_eagle3(m.head, m.target, sequences, lengths)
        report.update({"depth": 1, "positions": measured["positions"], **measured["per_depth"][1],
                       "per_depth": measured["per_depth"]})
    else:
        report.update({"depth": 1, **evaluate_eagle(m.head, m.target, sequences, lengths, m.vocab_ids)})
    if m.vocab_ids is not None:
        report["draft_vocab_size"] = len(m.vocab_ids)
    report["seconds"] = round(time.time() - started, 1)
    depths = ("depths 1-3: the k-th token drafted after a verification, unrolled over the head's own outputs"
              if m.eagle3 else "depth 1: the first token drafted after a verification")
    print("\n".join([f"EAGLE{'-3' if m.eagle3 else ''} head {head_path} vs {m.target_path} ({prompt_set_title(report)}; "
                     f"{depths}, teacher-forced with the target's features)",
                     *agreement_table(report.get("per_depth", {1: report}), "depth")]))
    if write:
        write_report(Path(head_path, report_name(EAGLE_REPORT_FILE, min_prompt_tokens, max_prompt_tokens,
                                                 prompt_count_in_name)), report)
    return report


def eagle_quality_on_answers(head_path, answer_file, question_file=None, target_path=None, conv_template=None) -> dict:
    """Per Spec-Bench task: an EAGLE head's depth-1 agreement along an answer file's greedy tokens
    (the draft-vocabulary head's, when the head has one, as for a draft's exits)."""
    from sd2.paths import SPEC_BENCH_QUESTIONS
    from sd2train.preprocess import get_format

    m = load_measured_head(head_path, target_path)
    by_task = answer_sequences(answer_file, question_file or SPEC_BENCH_QUESTIONS, m.tokenizer,
                               get_format(conv_template, m.tokenizer))
    key = "_draft_vocab" if m.vocab_ids is not None else ""

    depths = [1, 2, 3] if m.eagle3 else [1]

    def evaluate(sequences, lengths):
        if m.eagle3:
            result = evaluate_eagle3(m.head, m.target, sequences, lengths, tuple(depths))
            return result["positions"], {k: (r[f"top1_agreement{key}"], r[f"top4_recall{key}"])
                                         for k, r in result["per_depth"].items()}
        result = evaluate_eagle(m.head, m.target, sequences, lengths, m.vocab_ids)
        return result["positions"], {1: (result[f"top1_agreement{key}"], result[f"top4_recall{key}"])}

    report = {"head": str(head_path), "answer_file": str(answer_file),
              **agreement_on_answers(by_task, evaluate, depths)}
    print(format_task_table(f"EAGLE{'-3' if m.eagle3 else ''} head {head_path} along {answer_file} (first turns, "
                            f"teacher-forced; {'draft' if key else 'full'}-vocabulary head): top-1 / top-4 per depth",
                            report, {k: f"depth {k}" for k in depths}))
    return report


def write_thresholds(draft_path, thresholds: list[float]) -> None:
    """Record thresholds in the draft's config.json (config.sd2.thresholds)."""
    path = Path(draft_path, "config.json")
    config = json.loads(path.read_text())
    config["sd2"]["thresholds"] = thresholds
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"[exit-quality] thresholds {thresholds} written to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    measured = parser.add_mutually_exclusive_group(required=True)
    measured.add_argument("--draft", help="draft checkpoint (or a target, with --layers)")
    measured.add_argument("--eagle", metavar="HEAD",
                          help="an EAGLE head (sd2train.eagle) instead: its depth-1 agreement on the same prompts "
                               "and positions (an EAGLE-3 head's at depths 1-3), written to HEAD/eagle_quality.json")
    parser.add_argument("--target", default=None,
                        help="target checkpoint (default: the one the draft's config.sd2 or the head's config names)")
    parser.add_argument("--layers", type=int, default=None, help="measure the first N layers of --draft untrained")
    parser.add_argument("--exits", default=None, help="comma-separated exits (default: the draft's)")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS,
                        help=f"number of held-out prompts (another than {DEFAULT_PROMPTS}: the report is written "
                             "beside the model's own, as exit_quality-nN.json or eagle_quality-nN.json)")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens generated per prompt")
    parser.add_argument("--max-prompt-tokens", type=int, default=192)
    parser.add_argument("--min-prompt-tokens", type=int, default=0,
                        help="only prompts at least this long (e.g. 256 with --max-prompt-tokens 1024: the "
                             "long-context tasks of Spec-Bench, summarisation and RAG)")
    parser.add_argument("--data-path", default=None, help="ShareGPT JSON (default: the package's)")
    parser.add_argument("--conv-template", default=None, help="'vicuna' or the tokenizer's chat template (default)")
    parser.add_argument("--output", default=None, help="write the JSON here too")
    parser.add_argument("--update-thresholds", action="store_true",
                        help="write the suggested thresholds into the draft's config.sd2 (with --exit-costs, "
                             "the ones suggested for speed)")
    parser.add_argument("--exit-costs", default=None,
                        help="each exit's cost per draft token in target steps, comma-separated (as "
                             "scripts/benchmark_sd2.py prints them, e.g. 0.07,0.11,0.15): also suggests the "
                             "thresholds with the best estimated speed-up")
    parser.add_argument("--draft-vocab-size", type=int, default=None,
                        help="score the draft head over the first N ids of the draft vocabulary only (what "
                             "inference's --draft-vocab-size runs); written as exit_quality-vocab-N.json")
    parser.add_argument("--answer-file", default=None,
                        help="instead of held-out prompts: a float32 greedy answer file of the evaluation "
                             "harness (e.g. AR's on Spec-Bench); reports each exit's agreement per task along it")
    parser.add_argument("--question-file", default=None, help="with --answer-file (default: Spec-Bench's)")
    args = parser.parse_args(argv)
    count_in_name = count_in_report_name(args.prompts)
    if args.eagle:
        draft_only = [flag for flag, value in (("--layers", args.layers), ("--exits", args.exits),
                                               ("--exit-costs", args.exit_costs),
                                               ("--update-thresholds", args.update_thresholds),
                                               ("--draft-vocab-size", args.draft_vocab_size)) if value]
        if draft_only:
            parser.error(f"{', '.join(draft_only)}: for a draft's exits, not with --eagle")
        if args.answer_file:
            report = eagle_quality_on_answers(args.eagle, args.answer_file, args.question_file, args.target,
                                              args.conv_template)
        else:
            report = eagle_quality(args.eagle, args.target, args.prompts, args.new_tokens, args.max_prompt_tokens,
                                   args.data_path, args.conv_template, min_prompt_tokens=args.min_prompt_tokens,
                                   prompt_count_in_name=count_in_name)
        if args.output:
            write_report(Path(args.output), report)
        return
    if args.answer_file and args.draft_vocab_size:
        parser.error("--draft-vocab-size: for the held-out report, not with --answer-file")
    if args.answer_file:
        report = exit_quality_on_answers(args.draft, args.answer_file, args.question_file,
                                         parse_int_list(args.exits) if args.exits else None, args.conv_template)
        if args.output:
            write_report(Path(args.output), report)
        return
    exits = parse_int_list(args.exits) if args.exits else None
    costs = [float(x) for x in args.exit_costs.split(",")] if args.exit_costs else None
    report = exit_quality(args.draft, args.target, exits, args.layers,
                          args.prompts, args.new_tokens, args.max_prompt_tokens, args.data_path,
                          args.conv_template, update_thresholds=args.update_thresholds,
                          min_prompt_tokens=args.min_prompt_tokens, exit_costs=costs,
                          draft_vocab_size=args.draft_vocab_size, prompt_count_in_name=count_in_name)
    if args.output:
        write_report(Path(args.output), report)


if __name__ == "__main__":
    run_cli(main)
