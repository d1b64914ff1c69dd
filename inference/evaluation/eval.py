"""The Spec-Bench harness every ``inference_*.py`` script shares.

A method script adds these arguments; ``load_target`` checks them into an ``EvalPlan`` (questions,
answer file, settings: resolved once, before any weights load) and loads the target; ``run_eval``
takes the plan and a *forward* function ``forward(prompt_ids, max_new_tokens, stop_token_ids) ->
GenerationOutput``. Everything
else is done here, identically for every method: prompts from the conversation template (turn 2
contains the model's own turn-1 answer), warm-up, timing with device synchronisation, stop
tokens/strings, Spec-Bench's answer schema (``evaluation.answers``), resume with the same
settings only, and the final sort/de-duplication.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import shortuuid
import torch
from tqdm import tqdm

from evaluation.answers import (
    AnswerFileError,
    append_answer,
    check_resume,
    fingerprint,
    question_fingerprint,
    read_answers,
    reorganize_answers,
)
from evaluation.checkpoints import check_model_folder, load_tokenizer  # noqa: F401  (methods check drafts with it)
from evaluation.errors import EvalConfigError
from evaluation.prompts import ChatPrompter, eos_token_ids
from evaluation.questions import QuestionFileError, load_questions, task_of
from sd2.file_lock import FileLockedError, exclusive_lock
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT
from specdec.types import GenerationOutput

Forward = Callable[[list[int], int, set[int]], GenerationOutput]

MAX_SEED = 2**32 - 1  # what every generator (torch, CUDA, numpy) accepts

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RunIncomplete(RuntimeError):
    """A run that ended with questions unanswered (a sharded run's failed questions); the answers
    it made are kept, and a rerun of the same command answers the rest."""


def run_cli(main) -> None:
    """Run a method script's ``main``; bad input ends it with one ``error:`` line and exit 2, a run
    that left questions unanswered with its ``error:`` report and exit 1."""
    try:
        main()
    except (EvalConfigError, QuestionFileError, AnswerFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------- arguments and loading

INT8 = "int8"  # weight-only int8 draft layers and head, bfloat16 activations (SD2)


def add_draft_dtype_arg(group, int8: bool = False) -> None:
    choices = sorted(DTYPES) + ([INT8] if int8 else [])
    group.add_argument("--draft-dtype", choices=choices, default=None,
                       help="the draft's dtype (default: the target's), e.g. a bfloat16 draft under a float32 "
                            "target" + ("; int8: weight-only int8 layers and head with bfloat16 activations"
                                        if int8 else "") + "; the output stays the target's, which verifies "
                            "in its own dtype")


def draft_dtype(args) -> torch.dtype | None:
    """The torch dtype the draft loads in (int8 drafts load in bfloat16, then quantise)."""
    if args.draft_dtype == INT8:
        return torch.bfloat16
    return DTYPES[args.draft_dtype] if args.draft_dtype else None


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("evaluation (Spec-Bench)")
    g.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR),
                   help="target model (HF checkpoint); default: the prepared default target")
    g.add_argument("--model-id", required=True, help="names the answer file and every record's model_id")
    g.add_argument("--bench-name", default="spec_bench", help="question set under data/<bench-name>/")
    g.add_argument("--question-file", default=None,
                   help="Spec-Bench-format jsonl (default: data/<bench-name>/question.jsonl)")
    g.add_argument("--question-begin", type=int, default=None, help="index of the first question (debug)")
    g.add_argument("--question-end", type=int, default=None, help="index after the last question (debug)")
    g.add_argument("--categories", default=None,
                   help="comma list of categories or tasks (mt_bench, translation, summarization, qa, math_reasoning, rag)")
    g.add_argument("--questions-per-task", type=int, default=None,
                   help="only N questions of each task, its categories taken in turn (8: a 48-question run, "
                        "one question of each MT-bench category)")
    g.add_argument("--answer-file", default=None,
                   help="output jsonl (default: data/<bench-name>/model_answer/<model-id>.jsonl)")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto: float32 on CPU, float16 on CUDA")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--conv-template", default=None,
                   help="'chat_template' (the tokenizer's; the default when it has one), 'vicuna' "
                        "(FastChat's vicuna_v1.1) or any FastChat template name")
    g.add_argument("--num-warmup", type=int, default=3, help="full runs of the first question, not recorded")
    g.add_argument("--seed", type=int, default=0, help="torch/random seed, reset before every question")
    s = parser.add_argument_group("sharding (Ray; evaluation.sharding)")
    s.add_argument("--num-gpus-total", type=int, default=None,
                   help="GPUs to use in all: the questions are split across num-gpus-total // num-gpus-per-model "
                        "Ray workers, one model each (on this machine, or the Ray cluster at $RAY_ADDRESS)")
    s.add_argument("--num-gpus-per-model", type=int, default=1,
                   help="GPUs per worker (Spec-Bench's name; the engine runs a model on one device, so 1)")
    s.add_argument("--num-workers", type=int, default=1,
                   help="CPU workers on Ray, each answering a shard of the questions with its own model "
                        "(1: one process, no Ray)")
    return parser


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvalConfigError("--device cuda, but no CUDA device is available")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def question_file(args) -> Path:
    return Path(args.question_file) if args.question_file else REPO_ROOT / "data" / args.bench_name / "question.jsonl"


def answer_file(args) -> Path:
    if args.answer_file:
        return Path(args.answer_file)
    return REPO_ROOT / "data" / args.bench_name / "model_answer" / f"{args.model_id}.jsonl"


def selected_questions(args) -> list[dict]:
    for flag in ("question_begin", "question_end"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise EvalConfigError(f"--{flag.replace('_', '-')} must be >= 0 (an index into the question file), "
                                  f"got {getattr(args, flag)}")
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    questions = load_questions(question_file(args), args.question_begin, args.question_end, categories)
    if args.questions_per_task is not None:
        if args.questions_per_task < 1:
            raise EvalConfigError(f"--questions-per-task must be >= 1, got {args.questions_per_task}")
        # within a task, take its categories in turn: mt_bench's first 8 are one of each category
        rank, per_category = {}, Counter()
        for i, q in enumerate(questions):
            rank[i] = (per_category[q["category"]], i)
            per_category[q["category"]] += 1
        kept, per_task = set(), Counter()
        for i in sorted(rank, key=rank.get):
            task = task_of(questions[i]["category"])
            if per_task[task] < args.questions_per_task:
                per_task[task] += 1
                kept.add(i)
        questions = [q for i, q in enumerate(questions) if i in kept]
    if not questions:
        chosen = {k: getattr(args, k) for k in ("question_begin", "question_end", "categories", "questions_per_task")
                  if getattr(args, k) is not None}
        raise EvalConfigError(f"no questions selected from {question_file(args)} by "
                              + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in chosen.items()))
    return questions


@dataclass
class EvalPlan:
    """Everything a run needs, resolved and checked once, before any weights load: the run loop
    takes this, not the command line."""

    model_id: str
    question_path: Path
    answer_path: Path
    questions: list[dict]
    existing: list[dict]  # the answer file's records so far
    prompter: ChatPrompter
    settings: dict  # recorded in every answer; a resumed run must match them
    max_new_tokens: int
    num_warmup: int
    seed: int


def plan_eval(args, tokenizer) -> EvalPlan:
    """Everything that can be wrong with the input, checked before any model weights or generation."""
    if args.max_new_tokens < 1:
        raise EvalConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):  # nan/inf would sample garbage
        raise EvalConfigError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:  # NaN fails this too
        raise EvalConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.num_warmup < 0:
        raise EvalConfigError(f"--num-warmup must be >= 0, got {args.num_warmup}")
    if not 0 <= args.seed <= MAX_SEED:
        raise EvalConfigError(f"--seed must be a whole number in [0, {MAX_SEED}], got {args.seed}")
    check_sharding_args(args)
    prompter = ChatPrompter.from_name(args.conv_template, tokenizer)
    questions = selected_questions(args)
    settings = run_settings(args)
    check_writable(answer_file(args))
    with answer_file_lock(answer_file(args)):  # another run writing it now is refused before any model loads
        pass
    return EvalPlan(args.model_id, question_file(args), answer_file(args), questions,
                    existing_answers(args, settings, repair=True), prompter, settings, args.max_new_tokens,
                    args.num_warmup, args.seed)


def check_writable(path: Path) -> None:
    """The answer file can be made and appended to: found now, not after the model has loaded."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalConfigError(f"--answer-file {path}: cannot create its folder ({exc.strerror})") from None
    if not path.parent.is_dir():
        raise EvalConfigError(f"--answer-file {path}: {path.parent} is not a folder")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise EvalConfigError(f"--answer-file {path}: not writable")


@contextmanager
def answer_file_lock(path: Path):
    """Hold the answer file's write lock (one run per answer file: two would drop or duplicate each
    other's records); another run holding it is an error naming the file. Re-entrant within this
    process (a sharded run's coordinator holds it while it plans)."""
    key = Path(path).absolute()
    if key in _HELD_LOCKS:
        yield
        return
    try:
        with exclusive_lock(path, "answer file"):
            _HELD_LOCKS.add(key)
            try:
                yield
            finally:
                _HELD_LOCKS.discard(key)
    except FileLockedError as exc:
        raise EvalConfigError(str(exc)) from None


_HELD_LOCKS: set[Path] = set()


def check_sharding_args(args) -> None:
    if args.num_workers < 1:
        raise EvalConfigError(f"--num-workers must be >= 1, got {args.num_workers}")
    if args.num_gpus_per_model != 1:
        raise EvalConfigError(f"--num-gpus-per-model {args.num_gpus_per_model}: the engine runs a model on one "
                              "device, so each worker takes one GPU (leave it at 1)")
    if args.num_gpus_total is None:
        return
    if args.num_gpus_total < args.num_gpus_per_model:
        raise EvalConfigError(f"--num-gpus-total must be >= --num-gpus-per-model ({args.num_gpus_per_model}), "
                              f"got {args.num_gpus_total}")
    if args.num_workers > 1:
        raise EvalConfigError("give --num-gpus-total (GPU workers) or --num-workers (CPU workers), not both")
    if args.device == "cpu":
        raise EvalConfigError("--num-gpus-total runs the workers on GPUs: use --device cuda or auto, "
                              "or --num-workers for CPU workers")


# What selects questions, names files or spreads the work, rather than how answers are made: a
# resumed run may change these.
NOT_SETTINGS = {"model_id", "bench_name", "question_file", "question_begin", "question_end", "categories",
                "questions_per_task", "answer_file", "num_warmup", "num_gpus_total", "num_gpus_per_model",
                "num_workers"}


def run_settings(args) -> dict:
    """How this run makes its answers, recorded in every record: a resumed run must match them.
    Paths are recorded as fingerprints of what they hold (a moved draft is the same draft, a
    retrained one is not); ``auto`` device and dtype as what they resolved to."""
    settings = {}
    for key, value in sorted(vars(args).items()):
        if key in NOT_SETTINGS:
            continue
        if key.endswith("_path") and value is not None:
            settings[key.removesuffix("_path") + "_fingerprint"] = fingerprint(value) if Path(value).exists() else None
        else:
            settings[key] = value
    device = resolve_device(args.device)
    settings["device"], settings["dtype"] = device.type, str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    return settings


def existing_answers(args, settings: dict, repair: bool = False) -> list[dict]:
    """The answer file's records so far; an error if another model_id or other settings made them."""
    path = answer_file(args)
    try:
        records = read_answers(path, repair=repair)
        check_resume(path, records, args.model_id, settings)
    except AnswerFileError as exc:
        raise EvalConfigError(str(exc)) from None
    return records


def load_plan(args):
    """(tokenizer, plan): the target's tokenizer and the run's plan, without the weights (what a
    sharded run's coordinator needs)."""
    path = Path(args.model_path)
    check_model_folder(path, "--model-path", tokenizer=True)
    tokenizer = load_tokenizer(path, "--model-path")
    return tokenizer, plan_eval(args, tokenizer)


def load_target(args):
    """(model, tokenizer, plan): ``--model-path`` on ``--device`` in ``--dtype``, eval mode, and
    the run's plan. The template, question file, answer file and settings are checked first, so
    bad input fails in seconds, before the weights are read.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer, plan = load_plan(args)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=dtype).to(device).eval()
    return model, tokenizer, plan


def context_length(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    raise EvalConfigError(f"cannot find the context length in {type(cfg).__name__}")


# ---------------------------------------------------------------- answering one question

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _jsonable(value):
    """A method's stats as plain JSON: tensors and numpy values become lists/numbers, keys strings,
    NaN and infinities null (standard JSON has no such numbers)."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class Harness:
    """What answering a question needs; built once per run."""

    forward: Forward
    prompter: ChatPrompter
    device: torch.device
    max_new_tokens: int
    context: int
    seed: int

    def record(self, question: dict, model_id: str, settings: dict | None = None) -> dict:
        """The question's answer record in Spec-Bench's schema (``error`` set, at the top, when a
        turn's prompt does not fit)."""
        choice = self.answer(question)
        error = choice.pop("error", None)
        record = {"question_id": question["question_id"], "category": question["category"],
                  "answer_id": shortuuid.uuid(), "model_id": model_id, "choices": [choice], "tstamp": time.time(),
                  "question_fingerprint": question_fingerprint(question)}
        if settings is not None:
            record["settings"] = settings
        if error:
            record["error"] = error
        return record

    def answer(self, question: dict) -> dict:
        """One choice in Spec-Bench's form, with ``error`` set when a turn's prompt does not fit."""
        random.seed(self.seed)
        torch.manual_seed(self.seed)  # per question, so a resumed run samples what a full run would
        choice = {"index": 0, "turns": [], "decoding_steps": [], "new_tokens": [], "wall_time": [],
                  "accept_lengths": [], "stats": [], "token_ids": []}
        for j in range(len(question["turns"])):
            prompt = self.prompter.prompt_ids(question["turns"][: j + 1], choice["turns"])
            room = self.context - len(prompt)
            if room < 1:
                choice["error"] = (f"turn {j + 1}: prompt of {len(prompt)} tokens does not fit the "
                                   f"model's context of {self.context}")
                return choice
            _synchronize(self.device)
            start = time.perf_counter()
            out = self.forward(prompt, min(self.max_new_tokens, room), self.prompter.stop_token_ids)
            _synchronize(self.device)
            elapsed = time.perf_counter() - start
            choice["turns"].append(self.prompter.answer_text(out.token_ids))
            choice["decoding_steps"].append(int(out.decoding_steps))
            choice["new_tokens"].append(int(out.new_tokens))
            choice["token_ids"].append([int(t) for t in out.token_ids])  # what equal.py compares
            choice["wall_time"].append(elapsed)
            choice["accept_lengths"].extend(int(a) for a in out.accept_lengths)
            choice["stats"].append(_jsonable(out.stats))
        return choice


def make_harness(plan: EvalPlan, model, forward: Forward, max_new_tokens: int | None = None) -> Harness:
    """The plan's harness for ``forward`` on ``model`` (the model's own stop tokens added)."""
    plan.prompter.stop_token_ids |= eos_token_ids(plan.prompter.tokenizer, model)
    return Harness(forward, plan.prompter, next(model.parameters()).device, max_new_tokens or plan.max_new_tokens,
                   context_length(model), plan.seed)


# ---------------------------------------------------------------- the run

@torch.inference_mode()
def run_eval(plan: EvalPlan, model, forward: Forward) -> Path:
    """Answer the plan's questions with ``forward``; returns the answer file.

    Questions already answered (without error) in the answer file are skipped; errored ones
    are tried again. Each record is appended and flushed as it finishes.
    """
    path = plan.answer_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with answer_file_lock(path):  # for the whole run: appends and the final rewrite
        existing = read_answers(path, repair=True)  # as it is now that this run holds it
        try:
            check_resume(path, existing, plan.model_id, plan.settings)
        except AnswerFileError as exc:
            raise EvalConfigError(str(exc)) from None
        return _answer_pending(plan, model, forward, existing)


def _answer_pending(plan: EvalPlan, model, forward: Forward, existing: list[dict]) -> Path:
    path = plan.answer_path
    current = {q["question_id"]: question_fingerprint(q) for q in plan.questions}
    stale = sorted({r["question_id"] for r in existing if r["question_id"] in current
                    and r.get("question_fingerprint", current[r["question_id"]]) != current[r["question_id"]]}, key=str)
    if stale:
        print(f"{len(stale)} answer(s) in {path} were made for another version of their question (the question "
              f"file changed): answering them again: {stale[:20]}")
    done = {r["question_id"] for r in existing if "error" not in r and r["question_id"] not in stale}
    pending = [q for q in plan.questions if q["question_id"] not in done]
    print(f"{len(plan.questions)} questions from {plan.question_path}; {len(plan.questions) - len(pending)} "
          f"already answered in {path}; {len(pending)} to go")

    harness = make_harness(plan, model, forward)
    if pending and plan.num_warmup:
        for _ in tqdm(range(plan.num_warmup), desc="warm-up", leave=False):
            harness.answer(pending[0])

    accepted, errors, tokens, seconds = [], 0, 0, 0.0
    progress = tqdm(pending, desc=plan.model_id)
    for question in progress:
        record = harness.record(question, plan.model_id, plan.settings)
        choice = record["choices"][0]
        if "error" in record:
            errors += 1
            tqdm.write(f"question {question['question_id']}: {record['error']}")
        accepted.extend(choice["accept_lengths"])
        tokens, seconds = tokens + sum(choice["new_tokens"]), seconds + sum(choice["wall_time"])
        if accepted and seconds:
            progress.set_postfix(tok_s=f"{tokens / seconds:.1f}", tau=f"{sum(accepted) / len(accepted):.2f}")
        append_answer(path, record)

    reorganize_answers(path)
    if accepted:
        print(f"mean accepted tokens: {sum(accepted) / len(accepted):.3f}")
    if errors:
        print(f"{errors} question(s) recorded with an error (see the 'error' field)")
    print(f"answers: {path}")
    return path
