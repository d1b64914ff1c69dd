"""Sharded evaluation on Ray, Spec-Bench's ``--num-gpus-total`` / ``--num-gpus-per-model``, and
``--num-workers`` for CPU workers.

The questions still to answer (resume as in one process: those already answered are skipped) are
split into one shard per worker, dealt in turn so that every shard gets some of each task. Ray
runs the workers on this machine, or on the cluster at ``$RAY_ADDRESS`` (how a run spans nodes).
Each worker loads the target and builds the method's forward as one process does, and answers
its shard with ``run_eval`` into its own shard file beside the answer file
(``<answer>.shard-<k>.jsonl``, a record appended as each question finishes). A question that
raises is reported and its shard goes on with the next one. Then the coordinator folds the shard
files into the answer file (question order, one record per question: the file a one-process run
writes, timings apart) and removes them. A rerun first folds the shard files an interrupted run
left, so it redoes only the questions missing, whichever shard had them.

Ray is optional (``pip install ray``, or the package's ``[ray]`` extra); one process never
imports it. On a cluster every node needs the project installed and the same paths: the model,
the questions, and the answer file's folder (a shared file system).
"""
from __future__ import annotations

import argparse
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from evaluation.answers import AnswerFileError, append_answer, check_resume, read_answers, reorganize_answers
from evaluation.eval import EvalConfigError, RunIncomplete, answer_file, answer_file_lock, load_plan, load_target, question_file, run_eval


def worker_count(args) -> int:
    if args.num_gpus_total is not None:
        return args.num_gpus_total // args.num_gpus_per_model
    return args.num_workers


def sharded(args) -> bool:
    """Whether the flags ask for more than one worker (otherwise the run is one process, as before)."""
    return worker_count(args) > 1


# ---------------------------------------------------------------- shard files

def shard_path(answer_path: Path, index: int) -> Path:
    return answer_path.with_name(f"{answer_path.stem}.shard-{index}{answer_path.suffix}")


def shard_files(answer_path: Path) -> list[Path]:
    """The shard files of an answer file that a run (finished or interrupted) left beside it."""
    name = re.compile(re.escape(answer_path.stem) + r"\.shard-\d+" + re.escape(answer_path.suffix))
    if not answer_path.parent.is_dir():
        return []
    return sorted(p for p in answer_path.parent.iterdir() if name.fullmatch(p.name))


def fold_shard_files(answer_path: Path, model_id: str, settings: dict) -> list[dict]:
    """Move the shard files' records into the answer file and remove them; returns the answer
    file's records, in question order. Shards made with other settings are refused, as a resumed
    answer file would be. Safe to repeat after an interruption: the answer file keeps each
    question's last record."""
    shards = shard_files(answer_path)
    records = {}
    for path in shards:
        records[path] = read_answers(path, repair=True)
        try:
            check_resume(path, records[path], model_id, settings)
        except AnswerFileError as exc:
            raise EvalConfigError(str(exc)) from None
    for path in shards:
        for record in records[path]:
            append_answer(answer_path, record)
    folded = reorganize_answers(answer_path) if answer_path.is_file() else []
    for path in shards:  # only once the answer file holds their records
        path.unlink()
    return folded


# ---------------------------------------------------------------- a worker

def answer_shard(build: Callable, args: argparse.Namespace, questions: list[dict], threads: int) -> dict:
    """One Ray worker: the target and the method's forward (``build(args, model, tokenizer)``, the
    registered method's own, sent by the coordinator) as one process builds them (``args``
    name the shard file as the answer file), then ``run_eval`` on the shard's questions. A question
    that raises is left out and the shard resumes after it; returns those questions, question_id ->
    "ExceptionType: message"."""
    import torch

    torch.set_num_threads(threads)  # the worker's share of the CPUs: workers must not oversubscribe them
    model, tokenizer, plan = load_target(args)
    forward = build(args, model, tokenizer)
    plan = replace(plan, questions=questions)
    failed = {}
    while plan.questions:
        try:
            run_eval(plan, model, forward)
            break
        except Exception as exc:  # any: reported per question, and the shard goes on
            traceback.print_exc()  # into the worker's log, which Ray shows with the run's output
            recorded = {r["question_id"] for r in read_answers(plan.answer_path)}
            remaining = [q for q in plan.questions if q["question_id"] not in recorded]
            if not remaining:  # every question has its record: the failure was not a question's
                raise
            failed[remaining[0]["question_id"]] = f"{type(exc).__name__}: {exc}"
            plan = replace(plan, questions=remaining[1:], existing=[], num_warmup=0)  # warmed up already
    return failed


# ---------------------------------------------------------------- the coordinator

def import_ray():
    try:
        import ray
    except ImportError:
        raise EvalConfigError("sharded evaluation (--num-workers > 1, --num-gpus-total) runs on Ray, which is not "
                              "installed: pip install ray (or pip install -e '.[ray]')") from None
    return ray


def start_ray(ray) -> bool:
    """Connect to the cluster at $RAY_ADDRESS, or start Ray on this machine with its CPUs; True
    when this call started it (so it is this run's to shut down)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as exc:
            raise EvalConfigError(f"no Ray cluster at RAY_ADDRESS={address} ({exc})") from None
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ray.init(num_cpus=cpus, include_dashboard=False)
    return True


def worker_resources(ray, args, shards: int) -> tuple[dict, int]:
    """(Ray resources per worker, torch threads per worker), checked against the cluster's."""
    cluster = ray.cluster_resources()
    if args.num_gpus_total is not None:
        gpus = int(cluster.get("GPU", 0))
        if gpus < args.num_gpus_total:
            raise EvalConfigError(f"--num-gpus-total {args.num_gpus_total}, but the Ray cluster has {gpus} GPU(s)")
        return {"num_gpus": args.num_gpus_per_model, "num_cpus": 1}, 1  # a GPU worker's CPU work is light
    # CPU workers share the CPUs: (CPUs // workers) threads each, or 1, and never more than the largest
    # node has (Ray could not place the worker anywhere)
    largest_node = max(node["Resources"].get("CPU", 1) for node in ray.nodes() if node["Alive"])
    threads = max(1, min(int(cluster.get("CPU", 1)) // shards, int(largest_node)))
    return {"num_cpus": threads}, threads


def with_absolute_paths(args) -> argparse.Namespace:
    """The command line with every path absolute and the question and answer files named, so a
    worker finds them whatever its working directory."""
    paths = {k: str(Path(v).absolute()) for k, v in vars(args).items()
             if k.endswith(("_path", "_file")) and isinstance(v, str)}
    paths.update(question_file=str(question_file(args).absolute()), answer_file=str(answer_file(args).absolute()))
    return argparse.Namespace(**{**vars(args), **paths})


def run_sharded(build: Callable, args) -> Path:
    """Answer the plan's questions on Ray workers, each building the method's forward with
    ``build(args, model, tokenizer)`` (see the module's docstring), holding the answer file's lock
    throughout; returns the answer file. Questions left unanswered end it with ``RunIncomplete``."""
    args = with_absolute_paths(args)
    with answer_file_lock(answer_file(args)):
        return _run_sharded(build, args)


def _run_sharded(build: Callable, args) -> Path:
    _, plan = load_plan(args)  # everything checked before Ray starts or weights load
    ray = import_ray()
    path = plan.answer_path
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["question_id"] for r in fold_shard_files(path, plan.model_id, plan.settings) if "error" not in r}
    pending = [q for q in plan.questions if q["question_id"] not in done]
    workers = min(worker_count(args), len(pending))
    shards = [pending[k::workers] for k in range(workers)]  # dealt in turn: each shard gets some of every task
    print(f"{len(plan.questions)} questions from {plan.question_path}; {len(plan.questions) - len(pending)} "
          f"already answered in {path}; {len(pending)} to go on {len(shards)} Ray workers")
    if not shards:
        print(f"answers: {path}")
        return path

    failed, shard_errors = {}, {}
    started = start_ray(ray)
    try:
        resources, threads = worker_resources(ray, args, len(shards))
        worker = ray.remote(**resources)(answer_shard)
        running = {}  # Ray's reference to a worker's result -> its shard's index
        for index, shard in enumerate(shards):
            shard_args = argparse.Namespace(**{**vars(args), "answer_file": str(shard_path(path, index))})
            running[worker.remote(build, shard_args, shard, threads)] = index
        while running:
            (ready,), _ = ray.wait(list(running), num_returns=1)
            index = running.pop(ready)
            try:
                shard_failed = ray.get(ready)
                failed.update(shard_failed)
                print(f"shard {index}: {len(shards[index]) - len(shard_failed)} of {len(shards[index])} answered")
            except ray.exceptions.RayError as exc:  # the worker raised before or after its questions, or died
                cause = getattr(exc, "cause", None) or exc
                shard_errors[index] = f"shard {index} failed: {type(cause).__name__}: {cause}"
                print(shard_errors[index])
    finally:
        if started:
            ray.shutdown()

    answered = {r["question_id"] for r in fold_shard_files(path, plan.model_id, plan.settings)}
    report_unanswered(path, shards, answered, failed, shard_errors)
    print(f"answers: {path}")
    return path


def report_unanswered(path: Path, shards: list[list[dict]], answered: set, failed: dict, shard_errors: dict) -> None:
    """Raise ``RunIncomplete`` naming each question the shards left without a record, and why."""
    reasons = {}  # reason -> question ids
    for index, shard in enumerate(shards):
        for q in shard:
            qid = q["question_id"]
            if qid in answered:
                continue
            reason = failed.get(qid) or shard_errors.get(index) or (
                f"shard {index} finished, but its file lacks the answer (on a Ray cluster, the answer file's "
                "folder must be shared by every node)")
            reasons.setdefault(reason, []).append(qid)
    if not reasons:
        return
    unanswered = sum(len(ids) for ids in reasons.values())
    lines = [f"  question{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: {reason}"
             for reason, ids in reasons.items()]
    raise RunIncomplete(f"{unanswered} question(s) unanswered; the other answers are in {path}, and a rerun of the "
                        "same command answers only the missing ones:\n" + "\n".join(lines))
