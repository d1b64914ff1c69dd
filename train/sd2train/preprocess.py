"""FastChat-style preprocessing: conversations -> ``input_ids`` and ``labels`` (-100 = no loss).

Only assistant tokens carry labels, the assistant's end-of-turn token included. A conversation is
rendered to text with a template that also reports the character span of each assistant reply;
the text is tokenised once with offsets, and a token is labelled when it overlaps a reply's span.
This avoids FastChat's fragile token-count arithmetic and works for any fast tokenizer.

Templates: ``vicuna`` (FastChat's ``vicuna_v1.1`` from the fschat package, or any other FastChat
template name) and the tokenizer's own chat template (``chat_template``, the default when the
tokenizer has one). Chat-template spans are found by rendering prefixes: the text up to the
assistant's generation prompt, and up to the end of its reply.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100
CHAT_TEMPLATE = "chat_template"
TEMPLATE_ALIASES = {"vicuna": "vicuna_v1.1"}


class TemplateError(ValueError):
    """The template cannot render this data with reliable assistant spans."""


def chat_turns(messages: list[dict]) -> tuple[str | None, list[dict]] | None:
    """(system text, user/assistant turns alternating from a user turn and ending with an
    assistant turn), or None when the conversation does not have that shape."""
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    while messages and messages[0]["role"] != "user":  # FastChat drops leading non-user turns
        messages = messages[1:]
    if messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    expected = ("user", "assistant")
    if not messages or any(m["role"] != expected[i % 2] for i, m in enumerate(messages)):
        return None
    return system, messages


class FastChatFormat:
    """A FastChat conversation template (e.g. Vicuna v1.1: 'USER: ... ASSISTANT: ...</s>')."""

    add_special_tokens = True  # FastChat tokenises the prompt with the tokenizer's BOS

    def __init__(self, name: str):
        from fastchat.conversation import get_conv_template

        self.name = TEMPLATE_ALIASES.get(name, name)
        try:
            self.template = get_conv_template(self.name)
        except KeyError:
            raise TemplateError(
                f"unknown conversation template {name!r}: use 'vicuna', '{CHAT_TEMPLATE}' "
                "(the tokenizer's own) or a FastChat template name") from None

    def render(self, system, turns) -> tuple[str, list[tuple[int, int]]]:
        conv = self.template.copy()
        if system is not None:
            conv.set_system_message(system)
        spans = []
        for turn in turns:
            if turn["role"] == "user":
                conv.append_message(conv.roles[0], turn["content"])
                continue
            conv.append_message(conv.roles[1], None)
            start = len(conv.get_prompt())
            conv.messages[-1][1] = turn["content"]
            spans.append((start, len(conv.get_prompt().rstrip())))
        return conv.get_prompt(), spans

    def prompt(self, system, turns) -> str:
        """The text that asks for the next assistant reply after ``turns`` (ending with a user turn)."""
        conv = self.template.copy()
        if system is not None:
            conv.set_system_message(system)
        for turn in turns:
            conv.append_message(conv.roles[0 if turn["role"] == "user" else 1], turn["content"])
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()


class ChatTemplateFormat:
    """The tokenizer's own Jinja chat template (ChatML for SmolLM2, Llama-3's, Qwen2's, ...)."""

    name = CHAT_TEMPLATE
    add_special_tokens = False  # the template writes BOS itself where it wants one

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(f"the tokenizer {tokenizer.name_or_path!r} has no chat template: "
                                "pass --conv_template vicuna (or another FastChat template)")
        self.tokenizer = tokenizer

    def _text(self, messages, generation_prompt=False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def render(self, system, turns) -> tuple[str, list[tuple[int, int]]]:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + turns
        offset = len(messages) - len(turns)
        full = self._text(messages)
        spans = []
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            before = self._text(messages[:offset + i], generation_prompt=True)
            through = self._text(messages[:offset + i + 1])
            if not (full.startswith(through) and through.startswith(before)):
                raise TemplateError("the chat template does not render conversations prefix by prefix, so "
                                    "assistant spans cannot be located: use --conv_template vicuna")
            spans.append((len(before), len(through.rstrip())))
        return full, spans

    def prompt(self, system, turns) -> str:
        """The text that asks for the next assistant reply after ``turns`` (ending with a user turn)."""
        messages = ([{"role": "system", "content": system}] if system is not None else []) + turns
        return self._text(messages, generation_prompt=True)


def get_format(conv_template: str | None, tokenizer):
    """None/'auto' -> the tokenizer's chat template; 'chat_template'; 'vicuna' or a FastChat name."""
    if conv_template in (None, "", "auto", CHAT_TEMPLATE):
        return ChatTemplateFormat(tokenizer)
    return FastChatFormat(conv_template)


def tokenize_with_labels(text: str, spans, tokenizer, max_length: int, add_special_tokens: bool) -> dict:
    encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                         truncation=True, max_length=max_length)
    input_ids = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for i, (start, end) in enumerate(encoding["offset_mapping"]):
        if end <= start:  # added special tokens (BOS) have no characters
            continue
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index < len(spans) and start < spans[span_index][1] and end > spans[span_index][0]:
            labels[i] = input_ids[i]
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels)}


def preprocess(conversation: dict, tokenizer, fmt, max_length: int) -> dict | None:
    """One normalised conversation -> {input_ids, labels}, or None when it has nothing to learn."""
    shaped = chat_turns(conversation["messages"])
    if shaped is None:
        return None
    text, spans = fmt.render(*shaped)
    if conversation.get("cut_off") and spans:
        # The last reply stopped at max_new_tokens, not at the target's end of turn: do not teach
        # the end-of-turn token the template writes after it.
        last = shaped[1][-1]["content"]
        start, end = spans[-1]
        found = text.rfind(last, start, end)
        if last and found >= 0:
            spans[-1] = (start, found + len(last))
    example = tokenize_with_labels(text, spans, tokenizer, max_length, fmt.add_special_tokens)
    if not bool((example["labels"][1:] != IGNORE_INDEX).any()):
        return None
    return example


class SupervisedDataset(Dataset):
    """Preprocessed up front (with a progress bar); conversations with no labels are dropped."""

    def __init__(self, conversations, tokenizer, fmt, max_length: int):
        from tqdm import tqdm

        self.examples = [ex for conv in tqdm(conversations, desc="preprocess", unit="conv")
                         if (ex := preprocess(conv, tokenizer, fmt, max_length)) is not None]
        if not self.examples:
            raise ValueError(f"no training data left after preprocessing {len(conversations)} conversations "
                             "(none has an assistant reply within model_max_length in the user/assistant shape)")
        print(f"[data] {len(self.examples)} of {len(conversations)} conversations kept, "
              f"{sum(int((e['labels'] != IGNORE_INDEX).sum()) for e in self.examples)} labelled tokens")

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


class LazySupervisedDataset(Dataset):
    """Preprocesses on first access (large data). Unusable conversations are replaced by others."""

    def __init__(self, conversations, tokenizer, fmt, max_length: int, seed: int = 0):
        if not conversations:
            raise ValueError("no training data: the conversation list is empty")
        self.conversations, self.tokenizer, self.fmt, self.max_length = conversations, tokenizer, fmt, max_length
        self.cache: dict[int, dict] = {}
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.conversations)

    def __getitem__(self, i):
        for _ in range(100):
            if i not in self.cache:
                example = preprocess(self.conversations[i], self.tokenizer, self.fmt, self.max_length)
                if example is not None:
                    self.cache[i] = example
            if i in self.cache:
                return self.cache[i]
            i = self.rng.randrange(len(self.conversations))
        raise ValueError("no usable training data: 100 conversations in a row had no labelled assistant tokens")


@dataclass
class PaddingCollator:
    """Right-pads input_ids (pad id) and labels (-100) and builds the attention mask."""

    pad_token_id: int

    def __call__(self, examples):
        input_ids = torch.nn.utils.rnn.pad_sequence([e["input_ids"] for e in examples], batch_first=True,
                                                    padding_value=self.pad_token_id)
        labels = torch.nn.utils.rnn.pad_sequence([e["labels"] for e in examples], batch_first=True,
                                                 padding_value=IGNORE_INDEX)
        lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        attention_mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
