"""Named presets: the one vocabulary of methods for inference/eval.sh, the quick start and
scripts/benchmark_methods.py. A preset is a registered method (``evaluation.methods``) with its
flags; a new one is one ``preset(...)`` line below.

    python -m evaluation.run_presets --list        # every preset, its method and its flags

Flags may name ``Settings`` in braces: ``{draft}``, ``{datastore}``, ``{eagle_head}``,
``{medusa_heads}`` and ``{hydra_heads}`` are paths; ``{draft_dtype}`` (SpS), ``{sd2_draft_dtype}``,
``{lookup}``, ``{sd2_tree}`` and ``{sd2_overrides}`` are flags, shared by every preset that names
them (eval.sh's LOOKUP_TOKENS, SD2_TREE, SD2_EXITS, ... set them). The defaults are SD2's fastest
measured setting on 2 CPU cores in float32 (lookup-first of 3, a tree of 3 exit-6 nodes: every
verification pass at <= 4 rows).
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, fields

from evaluation.methods import REGISTRY
from sd2.paths import DEFAULT_DATASTORE, DEFAULT_DRAFT_DIR, REPO_ROOT, model_name

MODELS = REPO_ROOT / "models"
SD2_TREE = "--total-token 4 --depth 2 --top-k 2 --submodels 6 --thresholds 0"  # 3 nodes at exit 6


@dataclass(frozen=True)
class Preset:
    name: str
    method: str  # a registered method
    flags: str  # its flags; {setting} placeholders are filled from Settings
    description: str

    def argv(self, settings: Settings, device: str = "auto") -> list[str]:
        """The method's flags with the settings filled in."""
        return shlex.split(self.flags.format_map(settings.fragments(device)))

    def uses(self, setting: str) -> bool:
        return "{" + setting + "}" in self.flags


PRESETS: dict[str, Preset] = {}


def preset(name: str, method: str, flags: str, description: str) -> Preset:
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is defined twice")
    if method not in REGISTRY:
        raise ValueError(f"preset {name!r}: {method!r} is not a registered method")
    PRESETS[name] = Preset(name, method, flags, description)
    return PRESETS[name]


SD2_COMMON = "--drafter-path {draft} {sd2_draft_dtype} {lookup}"

preset("ar", "ar", "", "autoregressive decoding on the shared engine: the baseline of every speed-up")
preset("ar_graphs", "ar", "--cuda-graphs", "AR on the shared engine with CUDA graphs (CUDA only)")
preset("ar_hf", "ar", "--engine hf", "Hugging Face generate (outside reference)")
preset("hf_static", "hf", "--method generate --static-cache",
       "Hugging Face generate with a static KV cache, what torch.compile needs (outside reference)")
preset("sd2_chain", "sd2", SD2_COMMON + " {sd2_overrides}",
       "SD2 chain: the draft's own exits and thresholds, lookup-first of 3")
preset("sd2_tree", "sd2", SD2_COMMON + " --tree {sd2_tree} {sd2_overrides}",
       "SD2 tree: 3 nodes at exit 6 (depth 2, top-2), lookup-first of 3; the fastest measured on 2 CPU cores")
preset("sd2_free", "sd2", SD2_COMMON + " --tree {sd2_tree} --free-branches lookup,recycling,samd {sd2_overrides}",
       "SD2 tree with free branches from prompt lookup, Token Recycling's matrix and SAM-D's automaton (3 tokens "
       "each); any free continuation first")
preset("sd2_free_joined", "sd2", SD2_COMMON + " --tree {sd2_tree} --free-branches lookup,recycling,samd "
       "--lookup-first-min-ngram 2 {sd2_overrides}",
       "sd2_free, but only matches of 2+ tokens go first: recycled chains and 1-token matches join the draft's tree")
preset("sd2_tree_auto", "sd2", SD2_COMMON + " --tree --total-token auto {sd2_overrides}",
       "SD2 tree sized every step from the target's timed verification passes, the draft's exits (GPUs)")
preset("sps", "sps", "--drafter-path {draft} {draft_dtype}",
       "SpS: the SD2 draft at its deepest exit as a separate draft model")
preset("sps_hf", "sps", "--drafter-path {draft} --engine hf",
       "Hugging Face assisted generation with the SD2 draft (outside reference)")
preset("pld", "pld", "", "prompt lookup decoding: drafts copied from the context")
preset("pld_hf", "pld", "--engine hf", "Hugging Face prompt lookup (outside reference)")
preset("lookahead", "lookahead", "--level 5 --window 7 --guess 7", "Lookahead decoding (N=5, W=7, G=7)")
preset("rest", "rest", "--datastore-path {datastore} --num-draft 64 --max-token-span 16",
       "REST: retrieval from the ShareGPT datastore (scripts/build_rest_datastore.py builds it)")
preset("eagle", "eagle", "--ea-model-path {eagle_head}", "EAGLE: the head's static tree")
preset("eagle2", "eagle2", "--ea-model-path {eagle_head} --total-token 60 --depth 5 --top-k 10",
       "EAGLE-2: the head's dynamic tree of 60 nodes")
preset("eagle3", "eagle3", "--ea-model-path {eagle3_head}", "EAGLE-3: the fused-feature head's dynamic tree")
preset("ar_llamacpp", "ar_llamacpp", "", "llama.cpp decoding the default target's GGUF (outside CPU reference)")
preset("medusa", "medusa", "--medusa-model-path {medusa_heads}", "Medusa-1: the heads' static sparse tree")
preset("hydra", "hydra", "--hydra-model-path {hydra_heads}", "Hydra: the heads' static sparse tree")
preset("recycling", "recycling", "--output-id-topk 8 --tree-version 2.2.2 --total-token auto",
       "Token Recycling: the paper's 80-node template, sized by the timed verification costs; empty per question")
preset("samd", "samd", "--samd_n_predicts 40", "SAM decoding: the suffix automaton's longest-match drafts alone")
preset("samd_recycling", "samd", "--aux recycling --samd_len_threshold 5",
       "SAM-D[Token Recycling]: the automaton after matches of 5+ tokens, Token Recycling otherwise")
preset("samd_sd2", "samd", "--aux sd2 --aux-path {draft} --samd_len_threshold 5",
       "SAM-D[SD2]: the automaton after matches of 5+ tokens, SD2's tree of 3 exit-6 nodes otherwise")


@dataclass
class Settings:
    """What presets' {placeholders} stand for (eval.sh's variable in brackets)."""

    draft: str = str(DEFAULT_DRAFT_DIR)  # SD2's draft, SpS's at its deepest exit [DRAFT]
    datastore: str = str(DEFAULT_DATASTORE)  # REST [DATASTORE]
    eagle_head: str = str(MODELS / f"eagle-{model_name()}")  # [EAGLE_HEAD]
    eagle3_head: str = str(MODELS / f"eagle3-{model_name()}")  # [EAGLE3_HEAD]
    medusa_heads: str = str(MODELS / f"medusa-{model_name()}")  # [MEDUSA_HEADS]
    hydra_heads: str = str(MODELS / f"hydra-{model_name()}")  # [HYDRA_HEADS]
    draft_dtype: str = "bfloat16"  # SpS's draft; '': the target's (it verifies in its own) [DRAFT_DTYPE]
    sd2_draft_dtype: str | None = None  # None: int8 on a CPU, bfloat16 on CUDA [SD2_DRAFT_DTYPE]
    lookup_tokens: int = 3  # SD2: prompt lookup of up to N tokens, 0: none [LOOKUP_TOKENS]
    lookup_first: bool = True  # where lookup finds a continuation, verify it alone [LOOKUP_FIRST]
    sd2_tree: str = SD2_TREE  # sd2_tree's shape and exits [SD2_TREE]
    sd2_exits: str = ""  # every SD2 preset's exits, e.g. 6,9,12 ('': the preset's) [SD2_EXITS]
    sd2_thresholds: str = ""  # one per exit, the last 0 ('': the draft's, or defaults) [SD2_THRESHOLDS]
    sd2_args: str = ""  # more flags for every SD2 preset, last so they win

    def check(self) -> None:
        if self.lookup_tokens < 0:
            raise ValueError(f"lookup tokens must be >= 0, got {self.lookup_tokens}")
        if self.lookup_first and self.lookup_tokens == 0:
            raise ValueError("lookup-first needs lookup tokens > 0 (for no lookup at all, turn lookup-first off)")

    def fragments(self, device: str = "auto") -> dict[str, str]:
        self.check()
        sd2_dtype = self.sd2_draft_dtype or default_sd2_draft_dtype(device)
        lookup = f"--lookup-tokens {self.lookup_tokens}" + (" --lookup-first" if self.lookup_first else "")
        overrides = " ".join(filter(None, [
            f"--submodels {shlex.quote(self.sd2_exits)}" if self.sd2_exits else "",
            f"--thresholds {shlex.quote(self.sd2_thresholds)}" if self.sd2_thresholds else "", self.sd2_args]))
        return {"draft": shlex.quote(self.draft), "datastore": shlex.quote(self.datastore),
                "eagle_head": shlex.quote(self.eagle_head), "eagle3_head": shlex.quote(self.eagle3_head), "medusa_heads": shlex.quote(self.medusa_heads),
                "hydra_heads": shlex.quote(self.hydra_heads),
                "draft_dtype": f"--draft-dtype {shlex.quote(self.draft_dtype)}" if self.draft_dtype else "",
                "sd2_draft_dtype": f"--draft-dtype {shlex.quote(sd2_dtype)}",
                "lookup": lookup if self.lookup_tokens else "", "sd2_tree": self.sd2_tree, "sd2_overrides": overrides}


def default_sd2_draft_dtype(device: str = "auto") -> str:
    """int8 weights on a CPU (the fastest measured there), bfloat16 on CUDA."""
    import torch

    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "bfloat16" if on_cuda else "int8"


def find(name: str) -> Preset:
    """The preset called ``name``, or a ValueError naming the known ones."""
    if name in PRESETS:
        return PRESETS[name]
    close = name.replace("-", "_")
    hint = f" (did you mean {close}?)" if close in PRESETS else ""
    raise ValueError(f"unknown preset {name!r}{hint}; known: {', '.join(PRESETS)}")


def table(settings: Settings | None = None, device: str = "auto") -> str:
    """Every preset: name, registered method, flags as filled in, description."""
    settings = settings or Settings()
    width = max(len(name) for name in PRESETS)
    rows = []
    for p in PRESETS.values():
        rows.append(f"{p.name:<{width}}  {p.description}\n{'':<{width}}  = {p.method} {shlex.join(p.argv(settings, device))}".rstrip())
    return "\n".join(rows)


def _bool01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"use 0 or 1, got {text!r}")
    return text == "1"


def add_settings_args(s) -> None:
    """The Settings as command-line flags (run_presets and benchmark_methods share them; eval.sh's
    variable in brackets)."""
    defaults = Settings()
    s.add_argument("--drafter-path", dest="draft", default=defaults.draft, help="SD2's (and SpS's) draft [DRAFT]")
    s.add_argument("--datastore-path", dest="datastore", default=defaults.datastore, help="REST's datastore [DATASTORE]")
    s.add_argument("--ea-model-path", dest="eagle_head", default=defaults.eagle_head, help="EAGLE head [EAGLE_HEAD]")
    s.add_argument("--eagle3-model-path", dest="eagle3_head", default=defaults.eagle3_head,
                   help="EAGLE-3 head [EAGLE3_HEAD]")
    s.add_argument("--medusa-model-path", dest="medusa_heads", default=defaults.medusa_heads,
                   help="Medusa heads [MEDUSA_HEADS]")
    s.add_argument("--hydra-model-path", dest="hydra_heads", default=defaults.hydra_heads,
                   help="Hydra heads [HYDRA_HEADS]")
    s.add_argument("--draft-dtype", default=defaults.draft_dtype,
                   help="SpS's draft dtype ('': the target's) [DRAFT_DTYPE]")
    s.add_argument("--sd2-draft-dtype", default=None,
                   help="SD2's draft dtype (default: int8 on a CPU, bfloat16 on CUDA) [SD2_DRAFT_DTYPE]")
    s.add_argument("--lookup-tokens", type=int, default=defaults.lookup_tokens,
                   help="SD2: prompt lookup of up to N tokens (0: none) [LOOKUP_TOKENS]")
    s.add_argument("--lookup-first", type=_bool01, default=defaults.lookup_first,
                   help="1: where lookup finds a continuation, SD2 verifies it alone; 0: beside the draft's [LOOKUP_FIRST]")
    s.add_argument("--sd2-tree", default=defaults.sd2_tree,
                   help=f"sd2_tree's shape and exits (default: {defaults.sd2_tree!r}) [SD2_TREE]")
    s.add_argument("--sd2-exits", default="", help="every SD2 preset's exits, e.g. 6,9,12 [SD2_EXITS]")
    s.add_argument("--sd2-thresholds", default="", help="one per exit, the last 0 [SD2_THRESHOLDS]")
    s.add_argument("--sd2-args", default="", help="more flags for every SD2 preset (last: they win)")


def settings_from(args) -> Settings:
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
