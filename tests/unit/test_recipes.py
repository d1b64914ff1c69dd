"""Training recipes as files: each loads and gives the trainer exactly the arguments its launch
script passed as flags before (the quick start's overrides, the long CPU preset, the GPU recipe;
EAGLE's, EAGLE-3's and the Medusa/Hydra heads' CPU and GPU recipes, bf16 only where native);
the command line overrides a recipe; a bad recipe is refused by name."""
from __future__ import annotations

import pytest
import transformers

from sd2 import hardware
from sd2.hardware import fast_bfloat16
from sd2train.recipes import RecipeError, recipe_names, with_recipe
from sd2train.train import DataArguments, ModelArguments, SortedTrainingArguments

RUN = ["--model_name_or_path", "D", "--target_model_name_or_path", "T", "--output_dir", "O", "--data_path", "R"]
# What train_draft_common.sh passed before the recipes were files (its CPU defaults with the quick
# start's and the long preset's environment overrides; its GPU branch without the FSDP flags), but
# bf16 on a CPU only where it is native.
CPU_BEFORE = ["--submodels", "6,9,12", "--logging_steps", "1", "--save_strategy", "steps", "--report_to", "none",
              "--soft", "True", "--use_cpu", "True", "--bf16", str(fast_bfloat16("cpu")), "--num_train_epochs", "1",
              "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--lr_scheduler_type", "cosine",
              "--warmup_steps", "0.04", "--weight_decay", "0", "--model_max_length", "256", "--freeze_embeddings", "True",
              "--distill", "False", "--loss_vocab", "draft", "--dataloader_num_workers", "0",
              "--train_sampling_strategy", "group_by_length", "--save_total_limit", "1"]
BEFORE = {
    "quickstart": CPU_BEFORE + ["--max_steps", "600", "--learning_rate", "2e-3", "--max_train_conversations", "4000",
                                "--max_train_minutes", "20", "--save_steps", "50"],
    "long_cpu": CPU_BEFORE + ["--max_steps", "4500", "--learning_rate", "1e-3", "--max_train_conversations", "12000",
                              "--max_train_minutes", "60", "--save_steps", "100"],
    "gpu": ["--submodels", "6,9,12", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--soft", "True", "--bf16", "True", "--num_train_epochs", "3", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "16", "--learning_rate", "2e-5", "--lr_scheduler_type", "cosine",
            "--warmup_steps", "0.04", "--weight_decay", "0", "--model_max_length", "2048",
            "--gradient_checkpointing", "True", "--lazy_preprocess", "True", "--distill", "False"],
}


def parser():
    return transformers.HfArgumentParser((ModelArguments, DataArguments, SortedTrainingArguments))


def parsed(argv) -> dict:
    """Every argument the trainer would see (as parsed, before TrainingArguments checks the machine:
    the GPU recipe asks for bf16 on a GPU)."""
    p = parser()
    return vars(p.parse_args(with_recipe(argv, p)))


@pytest.mark.parametrize("flags, bf16", [({"avx2"}, False), ({"avx2", "amx_bf16"}, True)])
def test_the_cpu_recipes_autocast_to_bfloat16_only_where_it_is_native(monkeypatch, flags, bf16):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    for name in ("quickstart", "long_cpu"):
        assert parsed(["--recipe", name, *RUN])["bf16"] is bf16


def test_the_three_recipes_ship():
    assert {"quickstart", "long_cpu", "gpu"} <= set(recipe_names())


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_recipe_gives_the_arguments_its_script_passed_before(name):
    assert parsed(["--recipe", name, *RUN]) == parsed([*RUN, *BEFORE[name]])


def test_the_command_line_overrides_a_recipe_and_old_spellings_still_parse(tmp_path):
    args = parsed(["--recipe", "quickstart", *RUN, "--learning_rate", "1e-3", "--exits", "4,8"])
    assert (args["learning_rate"], args["submodels"], args["max_steps"]) == (1e-3, "4,8", 600)
    assert parsed([*RUN, "--submodels", "4,8"])["submodels"] == "4,8"  # the original spelling
    assert parsed([*RUN, "--max-train-minutes", "5"])["max_train_minutes"] == 5  # hyphens too, as HF's parser has them
    own = tmp_path / "mine.yaml"
    own.write_text("learning_rate: 5.0e-4\nsubmodels: [3, 6]\n")
    mine = parsed([f"--recipe={own}", *RUN])
    assert (mine["learning_rate"], mine["submodels"]) == (5e-4, "3,6")


@pytest.mark.parametrize("text, argv, message", [
    (None, ["--recipe", "quick"], "--recipe quick: no such recipe (known: "),
    (None, ["--recipe"], "--recipe needs a name"),
    ("learning_rat: 1.0e-3\n", None, "'learning_rat' is not an argument of this trainer"),
    ("- a list\n", None, "must be a mapping"),
    ("a: [unclosed\n", None, "not valid YAML"),
])
def test_a_bad_recipe_is_refused_by_name(tmp_path, text, argv, message):
    if text is not None:
        (tmp_path / "bad.yaml").write_text(text)
        argv = ["--recipe", str(tmp_path / "bad.yaml")]
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        with_recipe([*argv, *RUN], parser())


# ---------------------------------------------------------------- the head trainers' recipes

def head_parser(module: str):
    from sd2train import eagle, eagle3, heads

    trainer = {"eagle": eagle, "eagle3": eagle3, "heads": heads}[module]
    model, training = {"eagle": ("EagleModelArguments", "EagleTrainingArguments"),
                       "eagle3": ("Eagle3ModelArguments", "Eagle3TrainingArguments"),
                       "heads": ("HeadsModelArguments", "HeadsTrainingArguments")}[module]
    return transformers.HfArgumentParser((getattr(trainer, model), DataArguments, getattr(trainer, training)))


HEAD_RUN = ["--target_model_name_or_path", "T", "--output_dir", "O", "--data_path", "R"]
HEAD_COMMON = ["--weight_decay", "0", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none"]
HEAD_CPU = ["--use_cpu", "True", "--bf16", str(fast_bfloat16("cpu")), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-3",
            "--lr_scheduler_type", "cosine", "--warmup_steps", "0.04", "--model_max_length", "256",
            "--dataloader_num_workers", "0", "--train_sampling_strategy", "group_by_length"]
EAGLE_COMMON = ["--adam_beta2", "0.95", "--max_grad_norm", "0.5", *HEAD_COMMON]
# What train_eagle.sh, train_eagle3.sh and train_heads_common.sh passed as flags before their
# recipes were files (their CPU branches with bf16 only where native, their GPU branches without
# the FSDP flags).
HEAD_BEFORE = {
    ("eagle", "eagle_cpu"): ["--feature_weight", "1.0", "--feature_noise", "0.2", *EAGLE_COMMON, "--token_weight", "1.0",
                             *HEAD_CPU, "--max_steps", "1500", "--max_train_minutes", "25"],
    ("eagle", "eagle_gpu"): ["--feature_weight", "1.0", "--feature_noise", "0.2", *EAGLE_COMMON, "--token_weight", "0.1",
                             "--bf16", "True", "--num_train_epochs", "20", "--per_device_train_batch_size", "4",
                             "--gradient_accumulation_steps", "1", "--learning_rate", "3e-5",
                             "--lr_scheduler_type", "linear", "--warmup_steps", "2000", "--model_max_length", "2048",
                             "--lazy_preprocess", "True"],
    ("eagle3", "eagle3_cpu"): ["--draft_vocab_size", "8192", "--step_weight_decay", "0.8", *EAGLE_COMMON,
                               "--ttt_steps", "3", *HEAD_CPU, "--max_steps", "1500", "--max_train_minutes", "25"],
    ("eagle3", "eagle3_gpu"): ["--draft_vocab_size", "8192", "--step_weight_decay", "0.8", *EAGLE_COMMON,
                               "--ttt_steps", "7", "--bf16", "True", "--num_train_epochs", "40",
                               "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2",
                               "--learning_rate", "5e-5", "--lr_scheduler_type", "linear", "--warmup_steps", "12000",
                               "--model_max_length", "2048", "--lazy_preprocess", "True"],
    ("heads", "heads_cpu"): ["--num_heads", "4", "--draft_vocab_size", "8192", "--head_loss_decay", "0.8", *HEAD_COMMON,
                             *HEAD_CPU, "--max_steps", "1400", "--max_train_minutes", "15",
                             "--max_train_conversations", "8000"],
    ("heads", "heads_gpu"): ["--num_heads", "4", "--draft_vocab_size", "8192", "--head_loss_decay", "0.8", *HEAD_COMMON,
                             "--bf16", "True", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
                             "--gradient_accumulation_steps", "4", "--learning_rate", "1e-3",
                             "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1", "--model_max_length", "2048",
                             "--lazy_preprocess", "True"],
}


@pytest.mark.parametrize("module, recipe", sorted(HEAD_BEFORE))
def test_a_head_recipe_gives_the_arguments_its_script_passed_before(module, recipe):
    p = head_parser(module)
    from_recipe = vars(p.parse_args(with_recipe(["--recipe", recipe, *HEAD_RUN], p)))
    assert from_recipe == vars(p.parse_args([*HEAD_RUN, *HEAD_BEFORE[module, recipe]]))


def test_every_shipped_recipe_parses_for_its_trainer():
    trainers = {"eagle": "eagle", "eagle3": "eagle3", "heads": "heads"}
    for name in recipe_names():
        family = name.rsplit("_", 1)[0]
        if family in trainers:
            p = head_parser(trainers[family])
            p.parse_args(with_recipe(["--recipe", name, *HEAD_RUN], p))
        else:
            parsed(["--recipe", name, *RUN])
