"""Chat prompt templates, one per model family, and turning a transcript into a prompt.

Each GPT-NeoX family was fine-tuned on its own turn markers; using the wrong ones makes a
chat model ramble. The template also gives the stop sequences that end the bot's turn
(the marker of the next user turn), so generation stops where the reply ends.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatTemplate:
    """How one model family marks user and bot turns; ``{user}``/``{bot}`` stand for the names."""
    name: str
    label: str
    system: str          # text before the first turn
    user_prefix: str
    user_suffix: str
    bot_prefix: str
    bot_suffix: str
    stops: tuple[str, ...]

    def prefix(self, role: str, user: str, bot: str) -> str:
        raw = self.user_prefix if role == "user" else self.bot_prefix
        return raw.format(user=user, bot=bot)

    def suffix(self, role: str) -> str:
        return self.user_suffix if role == "user" else self.bot_suffix

    def stop_sequences(self, user: str, bot: str) -> list[str]:
        """Strings that mean the bot's turn is over (the start of the next turn, an end marker)."""
        return [s.format(user=user, bot=bot) for s in self.stops]

    def prompt(self, turns, user: str, bot: str) -> str:
        """The transcript as the model sees it, ending with an open bot turn to be continued.

        `turns` is a sequence of objects with `role` ("user"/"bot") and `text`. If the last turn
        is the bot's, it is left open so generation continues it.
        """
        out = [self.system.format(user=user, bot=bot)]
        turns = list(turns)
        for i, turn in enumerate(turns):
            last = i == len(turns) - 1
            out.append(self.prefix(turn.role, user, bot) + turn.text)
            if not (last and turn.role == "bot"):
                out.append(self.suffix(turn.role))
        if not turns or turns[-1].role == "user":
            # no trailing space: BPE writes the space as part of the reply's first word
            out.append(self.prefix("bot", user, bot).rstrip(" "))
        return "".join(out)


TEMPLATES = {
    t.name: t for t in [
        ChatTemplate("plain", "Plain (Name: text) - base Pythia", "",
                     "{user}: ", "\n", "{bot}: ", "\n", ("\n{user}:", "\n{bot}:")),
        ChatTemplate("redpajama", "RedPajama-INCITE-Chat (<human>/<bot>)", "",
                     "<human>: ", "\n", "<bot>: ", "\n", ("<human>:", "\n<bot>:")),
        ChatTemplate("dolly", "Dolly v2 (### Instruction / ### Response)",
                     "Below is an instruction that describes a task. "
                     "Write a response that appropriately completes the request.\n\n",
                     "### Instruction:\n", "\n\n", "### Response:\n", "\n\n### End\n\n",
                     ("### End", "### Instruction:")),
        # The system prompt StabilityAI published with stablelm-tuned-alpha; the model was tuned on it.
        ChatTemplate("stablelm", "StableLM-Tuned-Alpha (<|USER|>/<|ASSISTANT|>)",
                     "<|SYSTEM|># StableLM Tuned (Alpha version)\n"
                     "- StableLM is a helpful and harmless open-source AI language model developed by StabilityAI.\n"
                     "- StableLM is excited to be able to help the user, but will refuse to do anything that "
                     "could be considered harmful to the user.\n"
                     "- StableLM is more than just an information source, StableLM is also able to write "
                     "poetry, short stories, and make jokes.\n"
                     "- StableLM will refuse to participate in anything that could harm a human.\n",
                     "<|USER|>", "", "<|ASSISTANT|>", "",
                     ("<|USER|>", "<|SYSTEM|>", "<|endoftext|>")),
        ChatTemplate("oasst", "OpenAssistant Pythia (<|prompter|>/<|assistant|>)", "",
                     "<|prompter|>", "<|endoftext|>", "<|assistant|>", "<|endoftext|>",
                     ("<|endoftext|>", "<|prompter|>")),
    ]
}


def template_for_model(model_name: str) -> ChatTemplate:
    """Pick the template a model was tuned with from its file or repository name."""
    name = model_name.lower()
    if "redpajama" in name and "chat" in name:
        return TEMPLATES["redpajama"]
    if "dolly" in name:
        return TEMPLATES["dolly"]
    if "stablelm" in name and "tuned" in name:
        return TEMPLATES["stablelm"]
    if "oasst" in name or "openassistant" in name:
        return TEMPLATES["oasst"]
    return TEMPLATES["plain"]


def strip_reply(text: str, stops: list[str]) -> str:
    """A bot reply without the stop sequence that ended it and without surrounding blank space."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()
