"""What the model sees: memory, world info, the story and the author's note, and the window's parts.

Layout of a context (the KoboldAI convention):

    memory | world info entries whose keys occur in the recent story | story ... | author's note | last N tokens

`build_prompt` (run in the engine thread, it needs the tokenizer) turns a story into the two
strings `engine.generator.Generator.generate` takes: `memory` (memory + world info, always
kept) and `prompt` (the story with the author's note inserted ``authors_note_depth`` tokens
before its end). The engine's Generator then cuts the oldest story to fit (and previews that
window); `describe` labels the window's parts with token counts for the context view.
No Qt here: the engine thread and the text sources build prompts without any widget.
"""
from __future__ import annotations

from dataclasses import dataclass

WORLD_INFO_SCAN_CHARS = 2000     # a key must appear in this much recent story to pull its entry in
NOTE_TEMPLATE = "\n[Author's note: {}]\n"


@dataclass(frozen=True)
class Prompt:
    """The generator's inputs for one request, with the pieces kept apart for display."""
    memory_text: str         # the memory part of `memory`
    world_info_text: str     # the world info part of `memory`
    story: str               # the story with the author's note inserted
    note: str                # the inserted note ("" if none)
    note_at: int             # where in `story` the note starts

    @property
    def memory(self) -> str:
        return self.memory_text + self.world_info_text


@dataclass
class ContextPart:
    """One labelled piece of the context and how many tokens it takes."""
    kind: str            # "memory", "world info", "story", "author's note"
    text: str
    n_tokens: int


@dataclass
class Context:
    """The prompt window of one generation, labelled part by part."""
    parts: list[ContextPart]
    n_tokens: int
    budget: int          # tokens available for the prompt (context size - max new tokens)
    dropped_tokens: int  # oldest story tokens left out to fit
    note_dropped: bool = False   # the author's note did not fit (memory takes too much)

    def count(self, kind: str) -> int:
        return sum(p.n_tokens for p in self.parts if p.kind == kind)


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def tail_chars(tokenizer, text: str, n_tokens: int) -> int:
    """How many characters at the end of `text` make up about its last `n_tokens` tokens.

    Encodes a growing tail instead of the whole story, so a long story costs little.
    """
    if n_tokens <= 0 or not text:
        return 0
    chars = n_tokens * 6
    while True:
        whole = chars >= len(text)
        ids = tokenizer.encode(text if whole else text[-chars:])
        if not whole:
            ids = ids[1:]     # the first token may be half a word
        if len(ids) >= n_tokens or whole:
            return len(tokenizer.decode(ids[-n_tokens:]))
        chars *= 2


def build_prompt(tokenizer, *, text: str, memory: str = "", authors_note: str = "",
                 authors_note_depth: int = 80, world_info=(), budget: int | None = None,
                 shift_fraction: float = 0.25) -> Prompt:
    """Memory + matching world info, and the story with the author's note inserted.

    `budget` is the prompt's token budget (context size - new tokens); the engine's
    ContextShifter keeps at least ``1 - shift_fraction`` of what memory leaves of it. A note
    deeper than that would be cut away with the oldest story, so it is moved up to fit.
    """
    memory_text = _with_newline(memory) if memory.strip() else ""
    recent = text[-WORLD_INFO_SCAN_CHARS:]
    world = "".join(_with_newline(e.content) for e in world_info if e.content.strip() and e.matches(recent))
    if not authors_note.strip():
        return Prompt(memory_text, world, text, "", len(text))
    note = NOTE_TEMPLATE.format(authors_note.strip())
    depth = authors_note_depth
    if budget is not None:
        story_budget = budget - (len(tokenizer.encode(memory_text + world)) if memory_text + world else 0)
        kept = story_budget - int(story_budget * shift_fraction)
        depth = max(0, min(depth, kept - len(tokenizer.encode(note)) - 1))
    at = len(text) - tail_chars(tokenizer, text, depth)
    return Prompt(memory_text, world, text[:at] + note + text[at:], note, at)


def describe(tokenizer, prompt: Prompt, window, budget: int) -> Context:
    """Label the parts of `window` (an engine.context.Window built from `prompt`)."""
    parts: list[ContextPart] = []
    n_memory = len(tokenizer.encode(prompt.memory_text)) if prompt.memory_text else 0
    n_memory = min(n_memory, window.memory_tokens)
    if prompt.memory_text:
        parts.append(ContextPart("memory", prompt.memory_text, n_memory))
    if prompt.world_info_text:
        parts.append(ContextPart("world info", prompt.world_info_text, window.memory_tokens - n_memory))
    story_ids = window.tokens[window.memory_tokens:]
    story_text = tokenizer.decode(story_ids)
    note_pos = story_text.rfind(prompt.note) if prompt.note else -1
    if note_pos < 0:
        parts.append(ContextPart("story", story_text, len(story_ids)))
    else:
        before, after = story_text[:note_pos], story_text[note_pos + len(prompt.note):]
        n_note = len(tokenizer.encode(prompt.note))
        n_after = len(tokenizer.encode(after)) if after else 0
        n_before = max(0, len(story_ids) - n_note - n_after)
        if before:
            parts.append(ContextPart("story", before, n_before))
        parts.append(ContextPart("author's note", prompt.note, n_note))
        if after:
            parts.append(ContextPart("story", after, n_after))
    return Context(parts, len(window.tokens), budget, window.dropped_tokens, bool(prompt.note) and note_pos < 0)
