"""Training recipes as files: ``--recipe NAME_OR_PATH`` gives a trainer the settings of
``train/configs/recipes/NAME.yaml`` (or of any YAML file), and every flag on the command line
overrides them. A recipe is a mapping of the trainer's own argument names (``learning_rate``,
``submodels``, ...) to values; one that names no such argument is refused with its file.
``bf16: auto`` means bfloat16 autocast where it is native (a GPU, an AMX / AVX-512 BF16 CPU) and
float32 elsewhere: on an AVX2-only CPU bfloat16 runs several times slower (``sd2.hardware``).

    python -m sd2train.train --recipe quickstart --model_name_or_path D --output_dir O --learning_rate 1e-3
"""
from __future__ import annotations

import sys
from pathlib import Path

import transformers

from sd2.hardware import fast_bfloat16

RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "recipes"


class RecipeError(ValueError):
    pass


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise RecipeError(f"--recipe {name_or_path}: no such file")
        return path
    if (RECIPES_DIR / f"{name_or_path}.yaml").is_file():
        return RECIPES_DIR / f"{name_or_path}.yaml"
    raise RecipeError(f"--recipe {name_or_path}: no such recipe (known: {', '.join(recipe_names())}, or a YAML file)")


def load_recipe(name_or_path: str) -> dict:
    import yaml

    path = recipe_file(name_or_path)
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"--recipe {path}: not valid YAML ({exc})") from None
    if not isinstance(settings, dict):
        raise RecipeError(f"--recipe {path}: must be a mapping of argument names to values")
    return settings


def recipe_argv(name_or_path: str, parser) -> list[str]:
    """The recipe as command-line flags for ``parser`` (an HfArgumentParser)."""
    known = {action.dest for action in parser._actions}
    argv, settings = [], load_recipe(name_or_path)
    for key, value in settings.items():
        if key not in known:
            raise RecipeError(f"--recipe {recipe_file(name_or_path)}: {key!r} is not an argument of this trainer")
        if key == "bf16" and value == "auto":  # bfloat16 autocast only where it is native (sd2.hardware)
            value = fast_bfloat16("cpu" if settings.get("use_cpu") else "cuda")
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [f"--{key}", str(value)]  # True / False as HfArgumentParser reads booleans
    return argv


def with_recipe(argv: list[str], parser) -> list[str]:
    """``argv`` with ``--recipe X`` replaced by the recipe's flags, placed first so that the
    command line's own flags (parsed later: the last one wins) override them."""
    argv, recipes, rest, i = list(argv), [], [], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag == "--recipe":
            if not eq:
                if i + 1 == len(argv) or argv[i + 1].startswith("--"):
                    raise RecipeError(f"--recipe needs a name ({', '.join(recipe_names())}) or a YAML file")
                value, i = argv[i + 1], i + 1
            recipes.append(value)
        else:
            rest.append(argv[i])
        i += 1
    return [flag for name in recipes for flag in recipe_argv(name, parser)] + rest


def parse_with_recipe(argument_classes, argv: list[str] | None = None) -> tuple:
    """A trainer's command line (``sys.argv`` when None) parsed into its argument dataclasses, with
    ``--recipe NAME`` expanded first (its settings, then the flags)."""
    parser = transformers.HfArgumentParser(argument_classes)
    return tuple(parser.parse_args_into_dataclasses(with_recipe(sys.argv[1:] if argv is None else argv, parser)))


def recipe_main(train, argument_classes):
    """A trainer module's ``main(argv=None)``: its command line parsed with ``--recipe`` expanded
    (``parse_with_recipe``), then ``train(*arguments)``."""
    def main(argv: list[str] | None = None):
        return train(*parse_with_recipe(argument_classes, argv))

    return main
