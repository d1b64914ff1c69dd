"""Chat prompts for Spec-Bench questions and where an answer stops: a FastChat conversation
template (tokenised as FastChat and Spec-Bench do) or the tokenizer's own chat template."""
from __future__ import annotations

from dataclasses import dataclass, field

from evaluation.errors import EvalConfigError

# "vicuna" is the name Spec-Bench's users pass; FastChat calls the template vicuna_v1.1.
FASTCHAT_ALIASES = {"vicuna": "vicuna_v1.1"}
CHAT_TEMPLATE = "chat_template"  # the tokenizer's own chat template


@dataclass
class ChatPrompter:
    """Builds each turn's prompt ids and knows where an answer stops.

    Either a FastChat conversation template (tokenised like FastChat/Spec-Bench: the prompt
    text with the tokenizer's special tokens) or the tokenizer's own chat template.
    """

    tokenizer: object
    name: str
    fastchat_template: str | None = None  # None: the tokenizer's chat template
    stop_token_ids: set[int] = field(default_factory=set)
    stop_strings: list[str] = field(default_factory=list)

    @staticmethod
    def from_name(name: str | None, tokenizer) -> ChatPrompter:
        stop_ids = eos_token_ids(tokenizer)
        if name in (None, CHAT_TEMPLATE):
            if not getattr(tokenizer, "chat_template", None):
                raise EvalConfigError(
                    "the tokenizer has no chat template: pass --conv-template (e.g. 'vicuna' or another FastChat name)")
            return ChatPrompter(tokenizer, CHAT_TEMPLATE, None, stop_ids, [])
        from fastchat.conversation import conv_templates, get_conv_template

        fc_name = FASTCHAT_ALIASES.get(name, name)
        if fc_name not in conv_templates:
            raise EvalConfigError(
                f"unknown --conv-template {name!r}: use '{CHAT_TEMPLATE}', 'vicuna' or a FastChat template "
                f"({', '.join(sorted(conv_templates)[:12])}, ...)")
        conv = get_conv_template(fc_name)
        stop_ids |= set(conv.stop_token_ids or [])
        stops = [s for s in ([conv.stop_str] if isinstance(conv.stop_str, str) else conv.stop_str or []) if s]
        # a stop string that is one token also stops generation itself, not just the decoded text
        vocab = tokenizer.get_vocab()
        stop_ids |= {vocab[s] for s in stops if s in vocab}
        return ChatPrompter(tokenizer, fc_name, fc_name, stop_ids, stops)

    def prompt_ids(self, user_turns: list[str], answers: list[str]) -> list[int]:
        """Prompt for the last of ``user_turns``; ``answers`` are the model's earlier answers."""
        assert len(answers) == len(user_turns) - 1
        if self.fastchat_template is None:
            messages = []
            for i, turn in enumerate(user_turns):
                messages.append({"role": "user", "content": turn})
                if i < len(answers):
                    messages.append({"role": "assistant", "content": answers[i]})
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # the rendered template already holds its special tokens
            return self.tokenizer(text, add_special_tokens=False).input_ids
        from fastchat.conversation import get_conv_template

        conv = get_conv_template(self.fastchat_template)
        conv.messages = []  # some templates ship example messages
        for i, turn in enumerate(user_turns):
            conv.append_message(conv.roles[0], turn)
            conv.append_message(conv.roles[1], answers[i] if i < len(answers) else None)
        return self.tokenizer(conv.get_prompt()).input_ids

    def answer_text(self, token_ids: list[int]) -> str:
        """Decoded answer: cut at the first stop token and stop string, special tokens removed."""
        for i, t in enumerate(token_ids):
            if t in self.stop_token_ids:
                token_ids = token_ids[:i]
                break
        text = self.tokenizer.decode(token_ids, spaces_between_special_tokens=False)
        for stop in self.stop_strings:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text.strip()


def eos_token_ids(tokenizer, model=None) -> set[int]:
    """The tokenizer's EOS ids and the model's generation-config ones."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids
