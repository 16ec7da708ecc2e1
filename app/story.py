"""The story document: a tree of passages, memory, author's note, world info, chat turns.

A `Story` is plain data with no Qt in it, so the file formats and the undo history can be
tested without a window. The story text is a tree (`app.passages.StoryTree`): the text on
screen is the path from the root to the current passage, and every generation, retry or
chosen token alternative adds a branch instead of replacing text. Chat turns are a second
tree of the same kind, one passage per turn, so a regenerated bot turn is a sibling.

Undo/Redo works on whole snapshots of both trees: a generation, a branch move, a deletion or
a batch of typing each become one step, in one history.

File formats (see docs/story-format.md):
- the native versioned JSON (``"format": "neox-writer-story"``; version 2 holds the tree,
  version 1 files open as a tree with one branch);
- KoboldAI / Kobold Lite JSON (``prompt`` + ``actions`` + ``memory`` + ``worldinfo`` ...);
- plain text and Markdown export (the current path; Markdown can also outline the whole tree).
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from app.passages import MODEL, WRITER, Passage, StoryTree, Token, TreeState, tokens_from_pieces
from engine.sampling import KOBOLD_SAMPLER_IDS

STORY_FORMAT = "neox-writer-story"
STORY_VERSION = 2
MAX_STORY_FILE_BYTES = 256 * 1024 * 1024   # a story file larger than this is not one of ours
MAX_HISTORY = 200                          # undo steps kept in memory
MAX_AUTHORS_NOTE_DEPTH = 1_000_000         # tokens


class StoryFormatError(ValueError):
    """A story file could not be read: the message names the file and the field."""

    def __init__(self, path, message: str):
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


@dataclass
class WorldInfoEntry:
    """A world info entry: its content enters the context when one of its keys is in the recent story."""
    keys: list[str] = field(default_factory=list)
    content: str = ""
    always_on: bool = False
    comment: str = ""
    kobold: dict = field(default_factory=dict)    # an imported Lite entry's other fields, given back on export

    def matches(self, recent_text: str) -> bool:
        """True when this entry belongs in a context whose recent story is `recent_text`."""
        if self.always_on:
            return True
        lowered = recent_text.lower()
        return any(key.strip() and key.strip().lower() in lowered for key in self.keys)


@dataclass(frozen=True)
class Generation:
    """One stretch of model-written text on the current path: where it starts and what it says."""
    start: int
    text: str
    seed: int | None = None
    model: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class Snapshot:
    """One undo step: both trees (story passages and chat turns) as they were."""
    story: TreeState
    chat: TreeState
    label: str = ""

    def same_content(self, other: "Snapshot | None") -> bool:
        return other is not None and self.story == other.story and self.chat == other.chat


class History:
    """A linear undo/redo list of snapshots; recording after an undo drops the redo branch."""

    def __init__(self, initial: Snapshot):
        self._steps: list[Snapshot] = [initial]
        self._pos = 0
        self.saved: Snapshot | None = initial      # the step that is in the file (None: none is)

    @property
    def current(self) -> Snapshot:
        return self._steps[self._pos]

    def record(self, snapshot: Snapshot) -> bool:
        """Add `snapshot` as the newest step unless it equals the current one. Returns True if added."""
        if snapshot.same_content(self.current):
            return False
        del self._steps[self._pos + 1:]
        self._steps.append(snapshot)
        if len(self._steps) > MAX_HISTORY:
            del self._steps[0]
        self._pos = len(self._steps) - 1
        return True

    def can_undo(self) -> bool:
        return self._pos > 0

    def can_redo(self) -> bool:
        return self._pos < len(self._steps) - 1

    def undo(self) -> Snapshot | None:
        if not self.can_undo():
            return None
        self._pos -= 1
        return self.current

    def redo(self) -> Snapshot | None:
        if not self.can_redo():
            return None
        self._pos += 1
        return self.current


@dataclass
class ChatTurn:
    """One turn of a chat transcript: who spoke ("user" or "bot") and what they said."""
    role: str
    text: str


class Story:
    """Everything a story file holds; the GUI edits it and the worker builds contexts from it.

    `tree` holds the story text as passages, `chat` the chat turns (its root is empty; each
    turn is a passage with a role). `text` is the current path's text; assigning to it gives
    the change to the passages it touches (StoryTree.edit_text). `kobold_lite` keeps the
    fields of an imported Kobold Lite save that NeoX Writer does not use, so exporting gives
    them back.
    """

    def __init__(self, text: str = "", title: str = "", memory: str = "", authors_note: str = "",
                 authors_note_depth: int = 80, world_info=None, sampler=None, stop_sequences=None,
                 model_id: str = "", mode: str = "story", chat_template: str = "", user_name: str = "You",
                 bot_name: str = "Bot", chat_turns=None, show_probabilities: bool = False, kobold_lite=None):
        self.tree = StoryTree(text)
        self.chat = StoryTree()
        self.title = title
        self.memory = memory
        self.authors_note = authors_note
        self.authors_note_depth = authors_note_depth        # tokens before the end of the context
        self.world_info: list[WorldInfoEntry] = list(world_info or [])
        self.sampler: dict = dict(sampler or {})
        self.stop_sequences: list[str] = list(stop_sequences or [])
        self.model_id = model_id
        self.mode = mode                                    # "story" or "chat"
        self.chat_template = chat_template
        self.user_name = user_name
        self.bot_name = bot_name
        self.show_probabilities = show_probabilities        # colour generated tokens by probability
        self.kobold_lite: dict = dict(kobold_lite or {})
        if chat_turns:
            self.chat_turns = chat_turns
        self.history = History(self.snapshot("open"))

    # --- the text on screen --------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.tree.text()

    @text.setter
    def text(self, value: str) -> None:
        self.tree.edit_text(value)

    @property
    def generations(self) -> list[Generation]:
        """The model-written passages on the current path that the writer has not edited."""
        return [Generation(s.start, s.passage.text, s.passage.seed, s.passage.model)
                for s in self.tree.spans() if s.passage.generated and not s.passage.edited and s.passage.text]

    # --- undo / redo -----------------------------------------------------------------
    def snapshot(self, label: str = "") -> Snapshot:
        return Snapshot(self.tree.state(), self.chat.state(), label)

    def restore(self, snapshot: Snapshot) -> None:
        self.tree.restore(snapshot.story)
        self.chat.restore(snapshot.chat)

    def checkpoint(self, label: str) -> bool:
        """Record the trees as an undo step (no-op when nothing changed)."""
        return self.history.record(self.snapshot(label))

    def undo(self) -> bool:
        """Step back one generation, move or edit; unrecorded typing is recorded first so Redo returns it."""
        self.checkpoint("edit")
        snap = self.history.undo()
        if snap is None:
            return False
        self.restore(snap)
        return True

    def redo(self) -> bool:
        snap = self.history.redo()
        if snap is None:
            return False
        self.restore(snap)
        return True

    def can_undo(self) -> bool:
        return self.history.can_undo() or not self.snapshot().same_content(self.history.current)

    def can_redo(self) -> bool:
        return self.history.can_redo() and self.snapshot().same_content(self.history.current)

    def mark_saved(self) -> None:
        """The trees as they are now are what the file holds (see `matches_saved`)."""
        self.history.saved = self.snapshot("saved")

    def matches_saved(self) -> bool:
        """True when the trees are back to what was last saved or opened (Undo after a save)."""
        return self.snapshot().same_content(self.history.saved)

    # --- generations -----------------------------------------------------------------
    def add_generation(self, text: str, *, parent: int | None = None, tokens=None, seed: int | None = None,
                       sampler=None, model: str = "", go: bool = True) -> Passage:
        """A model-written child of `parent` (default: the current passage) holding `text`.

        `tokens` (TokenPiece-like) are kept when they spell `text`; when the view changed some
        characters one for one (Qt shows "\r" as "\n"), each token takes its text from `text`.
        `go` makes the new passage current (the first of N alternatives is shown, the others
        wait in the tree).
        """
        tokens = tokens_from_pieces(tokens or ())
        spelled = "".join(t.text for t in tokens)
        if spelled != text:
            tokens = tuple(replace(t, text=text[t.start:t.end]) for t in tokens) if len(spelled) == len(text) else ()
        node = self.tree.add_child(self.tree.current if parent is None else parent, text, MODEL, tokens=tokens,
                                   seed=seed, sampler=sampler, model=model or self.model_id)
        if go:
            self.tree.go_to(node.id)
        return node

    def last_generation(self) -> Generation | None:
        """The current passage if the model wrote it and it is unedited."""
        span = self.tree.spans()[-1]
        p = span.passage
        if p.generated and not p.edited and p.text:
            return Generation(span.start, p.text, p.seed, p.model)
        return None

    def can_retry(self) -> bool:
        """True when the story ends with a model-written passage (Retry writes a sibling of it)."""
        node = self.tree[self.tree.current]
        return node.generated and node.parent is not None

    def retry_point(self) -> Passage | None:
        """For Retry: if the current passage is model-written, go to its parent (the new generation
        becomes its sibling) and return it; None when there is no generation to retry."""
        node = self.tree[self.tree.current]
        if not node.generated or node.parent is None:
            return None
        self.tree.go_to(node.parent)
        return node

    def branch_with_token(self, offset: int, text: str, token: int = -1, probability: float = math.nan) -> Passage:
        """Start a new branch at path offset `offset` whose first token is the chosen alternative
        `text` (the passage holding `offset` is split there); it becomes current."""
        parent = self.tree.branch_at(offset)
        node = self.tree.add_child(parent, "", MODEL, model=self.model_id)
        self.tree.append_tokens(node.id, [Token(text, token, probability)])
        self.tree.go_to(node.id)
        return self.tree[node.id]

    # --- chat turns --------------------------------------------------------------------
    @property
    def chat_turns(self) -> tuple[ChatTurn, ...]:
        """The current chat path's turns; a tuple, because changing it would change nothing:
        assign a new list (which branches where it differs) or use edit_chat_turn."""
        return tuple(ChatTurn(p.role, p.text) for p in self.chat.path()[1:])

    @chat_turns.setter
    def chat_turns(self, turns) -> None:
        """Make the chat path `turns`: the turns they share with the current path stay, and where
        they differ a new branch starts (so a regenerated bot turn becomes a sibling)."""
        path = self.chat.path()[1:]
        keep = 0
        while keep < min(len(path), len(turns)) and (path[keep].role, path[keep].text) == (turns[keep].role,
                                                                                           turns[keep].text):
            keep += 1
        node_id = path[keep - 1].id if keep else StoryTree.ROOT
        for turn in turns[keep:]:
            node_id = self.chat.add_child(node_id, turn.text, MODEL if turn.role == "bot" else WRITER,
                                          role=turn.role).id
        self.chat.go_to(node_id)

    def chat_positions(self) -> list[tuple[int, int]]:
        """Each chat turn's (alternative, of how many): "Bot 2/3" after two regenerations."""
        return [self.chat.sibling_position(p.id) for p in self.chat.path()[1:]]

    def edit_chat_turn(self, index: int, text: str) -> None:
        """The writer changed turn `index` of the chat path in place."""
        node = self.chat.path()[1 + index]
        self.chat.update(node.id, text=text, tokens=(), edited=node.edited or node.generated)

    # --- native file format ----------------------------------------------------------
    def to_json(self, trees: bool = True) -> dict:
        """The native JSON as a dict (`trees=False`: the two trees left as None, for
        `story_json_text`, which writes them from its cache)."""
        return {
            "format": STORY_FORMAT,
            "version": STORY_VERSION,
            "title": self.title,
            "text": self.text,
            "tree": _tree_json(self.tree) if trees else None,
            "memory": self.memory,
            "authors_note": self.authors_note,
            "authors_note_depth": self.authors_note_depth,
            "world_info": [asdict(w) for w in self.world_info],
            "sampler": dict(self.sampler),
            "stop_sequences": list(self.stop_sequences),
            "model_id": self.model_id,
            "mode": self.mode,
            "show_probabilities": self.show_probabilities,
            "chat": {
                "template": self.chat_template,
                "user_name": self.user_name,
                "bot_name": self.bot_name,
                "tree": _tree_json(self.chat) if trees else None,
            },
            "kobold_lite": dict(self.kobold_lite),
        }

    @classmethod
    def from_json(cls, data, path=None) -> "Story":
        """Build a story from the native JSON (version 1 or 2); raises StoryFormatError naming the bad field."""
        if not isinstance(data, dict):
            raise StoryFormatError(path, "the top level is not a JSON object")
        if data.get("format") != STORY_FORMAT:
            raise StoryFormatError(path, f"field 'format' is {data.get('format')!r}, expected {STORY_FORMAT!r}")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise StoryFormatError(path, f"field 'version' is {version!r}, expected an integer")
        if version > STORY_VERSION:
            raise StoryFormatError(path, f"written by a newer NeoX Writer (story format version {version}; "
                                         f"this version reads up to {STORY_VERSION})")
        if version < 1:
            raise StoryFormatError(path, f"field 'version' is {version}, expected 1..{STORY_VERSION}")
        f = _Fields(data, path)
        chat = f.obj("chat")
        cf = _Fields(chat, path, "chat.")
        story = cls(
            title=f.str("title"), memory=f.str("memory"), authors_note=f.str("authors_note"),
            authors_note_depth=f.int("authors_note_depth", 80, 0, MAX_AUTHORS_NOTE_DEPTH),
            sampler=_sane_sampler(f.obj("sampler")), stop_sequences=f.str_list("stop_sequences"),
            model_id=f.str("model_id"), mode=f.choice("mode", ("story", "chat"), "story"),
            chat_template=cf.str("template"), user_name=cf.str("user_name", "You"),
            bot_name=cf.str("bot_name", "Bot"), show_probabilities=f.bool("show_probabilities"),
            kobold_lite=f.obj("kobold_lite"),
        )
        for i, item in enumerate(f.list("world_info")):
            wf = _Fields(item, path, f"world_info[{i}].")
            story.world_info.append(WorldInfoEntry(wf.str_list("keys"), wf.str("content"),
                                                   wf.bool("always_on"), wf.str("comment"), wf.obj("kobold")))
        if version == 1:
            story.tree = _tree_from_v1(f, path)
            turns = []
            for i, item in enumerate(cf.list("turns")):
                tf = _Fields(item, path, f"chat.turns[{i}].")
                turns.append(ChatTurn(tf.choice("role", ("user", "bot"), "user"), tf.str("text")))
            story.chat_turns = turns
        else:
            story.tree = _read_tree(data.get("tree"), path, "tree")
            story.chat = _read_tree(chat.get("tree", {"current": 0, "passages": [{"id": 0, "parent": None}]}),
                                    path, "chat.tree")
        story.history = History(story.snapshot("open"))
        return story

    # --- KoboldAI / Kobold Lite ------------------------------------------------------
    def to_kobold(self) -> dict:
        """A Kobold Lite save of the current path: the first passage is the prompt, each later one an
        action. Fields kept from an imported Lite save come back as they were."""
        pieces = [p.text for p in self.tree.path() if p.text]
        kept = self.kobold_lite.get("savedsettings")
        saved = dict(kept) if isinstance(kept, dict) else {}
        saved.update({k: self.sampler[src] for k, src in _KOBOLD_SETTINGS.items() if src in self.sampler})
        if "order" in self.sampler:
            ids = {name: i for i, name in KOBOLD_SAMPLER_IDS.items()}
            saved["sampler_order"] = [ids[n] for n in self.sampler["order"] if n in ids]
        if self.mode == "chat":
            saved.update(opmode=3, chatname=self.user_name, chatopponent=self.bot_name)
        elif _number(saved.get("opmode")) == 3:
            saved["opmode"] = 1
        out = dict(self.kobold_lite)
        out.update({
            "gamestarted": bool(pieces),
            "prompt": pieces[0] if pieces else "",
            "memory": self.memory,
            "authorsnote": self.authors_note,
            "anotetemplate": self.kobold_lite.get("anotetemplate", "[Author's note: <|>]"),
            "anotestr": self.authors_note_depth * CHARS_PER_TOKEN,
            "actions": pieces[1:],
            "actions_metadata": self.kobold_lite.get("actions_metadata", {}),
            "worldinfo": [{
                "keysecondary": "", "keyanti": "", "folder": None, "selective": False, "probability": 100,
                **w.kobold,
                "key": ",".join(w.keys), "content": w.content, "comment": w.comment, "constant": w.always_on,
            } for w in self.world_info],
            "wifolders_d": self.kobold_lite.get("wifolders_d", {}),
            "wifolders_l": self.kobold_lite.get("wifolders_l", []),
            "extrastopseq": "||$||".join(self.stop_sequences),
            "tokenbans": "||$||".join(self.sampler.get("banned_phrases", [])),
            "logitbiasdict": {str(k): v for k, v in self.sampler.get("logit_bias", {}).items()},
            "savedsettings": saved,
        })
        return out

    @classmethod
    def from_kobold(cls, data, path=None) -> "Story":
        """Read a KoboldAI client or Kobold Lite save (actions as a list, a dict, or United's nested form).

        Kobold Lite writes many numbers as strings ("anotestr": "320"); a numeric string counts
        as its number everywhere.
        """
        if not isinstance(data, dict) or ("prompt" not in data and "actions" not in data):
            raise StoryFormatError(path, "not a KoboldAI story: no 'prompt' or 'actions' field")
        f = _Fields(data, path)
        story = cls(f.str("prompt"), memory=f.str("memory"), authors_note=f.str("authorsnote"),
                    kobold_lite={k: v for k, v in data.items() if k not in _KOBOLD_MODELLED})
        anotestr = _number(data.get("anotestr"))
        if anotestr is not None and anotestr >= 0:
            anotestr = min(anotestr, MAX_AUTHORS_NOTE_DEPTH * CHARS_PER_TOKEN)    # (a huge int cannot be divided)
            story.authors_note_depth = max(1, round(anotestr / CHARS_PER_TOKEN))
        for action in _kobold_actions(data.get("actions"), path):
            if action:
                story.tree.go_to(story.tree.add_child(story.tree.current, action, MODEL).id)
        for i, item in enumerate(f.list("worldinfo")):
            wf = _Fields(item, path, f"worldinfo[{i}].")
            keys = [k.strip() for k in wf.str("key").split(",") if k.strip()]
            extra = {k: v for k, v in item.items() if k not in ("key", "content", "constant", "comment")}
            story.world_info.append(WorldInfoEntry(keys, wf.str("content"), wf.bool("constant"), wf.str("comment"),
                                                   extra))
        story.stop_sequences = _lite_list(data.get("extrastopseq"))
        saved = data.get("savedsettings")
        story.sampler = _sane_sampler(_kobold_sampler(saved if isinstance(saved, dict) else {}, data))
        if isinstance(saved, dict):
            _kobold_mode(story, saved)
        story.history = History(story.snapshot("open"))
        return story

    # --- plain exports ---------------------------------------------------------------
    def to_plain_text(self) -> str:
        return self.text if self.mode == "story" else self._transcript_lines("{name}: {text}")

    def to_markdown(self, whole_tree: bool = False) -> str:
        """The current path as Markdown; `whole_tree` writes every branch as a nested outline instead."""
        title = self.title or "Untitled story"
        out = [f"# {_md_escape(title)}", ""]
        if whole_tree:
            out.append(self._outline())
        elif self.mode == "chat":
            out.append(self._transcript_lines("**{name}:** {text}", "\n\n"))
        else:
            out.append(self.text)
        if self.memory.strip():
            out += ["", "---", "", "## Memory", "", self.memory]
        return "\n".join(out).rstrip() + "\n"

    def _outline(self) -> str:
        """Every passage as a list item under its parent; the current path in bold, bookmarks starred."""
        on_path = {p.id for p in self.tree.path()}
        lines = []
        for depth, p in self.tree.depth_first():
            text = _md_escape(p.text.strip()).replace("\n", "\n" + "  " * (depth + 1)) or "*(empty)*"
            if p.id in on_path and p.text.strip():
                text = f"**{text}**"
            mark = "★ " if p.bookmarked else ""
            who = " *(model)*" if p.generated else ""
            lines.append(f"{'  ' * depth}- {mark}{text}{who}")
        return "\n".join(lines)

    def _transcript_lines(self, fmt: str, sep: str = "\n") -> str:
        names = {"user": self.user_name, "bot": self.bot_name}
        return sep.join(fmt.format(name=names.get(t.role, t.role), text=t.text) for t in self.chat_turns)


CHARS_PER_TOKEN = 4   # Kobold Lite measures the author's note depth in characters; we measure tokens

# Kobold Lite `savedsettings` key -> our sampler setting name (KoboldCpp's names where we share them)
_KOBOLD_SETTINGS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typ_s": "typical", "tfs_s": "tfs", "top_a": "top_a", "rep_pen": "rep_pen",
    "rep_pen_range": "rep_pen_range", "rep_pen_slope": "rep_pen_slope", "presence_penalty": "presence_penalty",
    "miro_type": "mirostat", "miro_tau": "mirostat_tau", "miro_eta": "mirostat_eta",
    "max_length": "max_new_tokens", "max_context_length": "n_ctx",
    "dry_multiplier": "dry_multiplier", "dry_base": "dry_base", "dry_allowed_length": "dry_allowed_length",
    "dry_penalty_last_n": "dry_penalty_last_n", "xtc_threshold": "xtc_threshold",
    "xtc_probability": "xtc_probability", "dynatemp_range": "dynatemp_range",
    "dynatemp_exponent": "dynatemp_exponent", "smoothing_factor": "smoothing_factor",
    "smoothing_curve": "smoothing_curve",
}
# top-level Lite fields a Story holds itself; every other field is kept in `Story.kobold_lite`
_KOBOLD_MODELLED = {"gamestarted", "prompt", "actions", "memory", "authorsnote", "anotestr", "worldinfo",
                    "extrastopseq", "tokenbans", "logitbiasdict"}
LITE_CHAT_MODE = 3    # Kobold Lite's `opmode`: 1 story, 2 adventure, 3 chat, 4 instruct


def _number(value):
    """A JSON number, or a string that spells one (Kobold Lite writes "320"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value        # (math.isfinite of an int beyond the float range raises OverflowError)
    return None


# The sampler settings of a story whose values have a known shape; every other one must be a
# plain value (the sampling panel and the Kobold export take them as they are).
_SAMPLER_LISTS = ("order", "banned_phrases", "dry_sequence_breakers")


def _sane_sampler(sampler: dict) -> dict:
    """The settings of a story's "sampler" object that are usable: finite numbers within the int64
    range, true/false, text, lists of text for the list settings and a token -> bias map for
    logit_bias. Others are dropped (a setting is not the story: the panel shows its default)."""
    def plain(v):
        if isinstance(v, (bool, str)):
            return True
        return (isinstance(v, int) and -2 ** 63 <= v < 2 ** 63) or (isinstance(v, float) and math.isfinite(v))
    out = {}
    for key, value in sampler.items():
        if key in _SAMPLER_LISTS:
            ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        elif key == "logit_bias":
            ok = isinstance(value, dict) and all(plain(v) and not isinstance(v, (bool, str)) for v in value.values())
        else:
            ok = plain(value)
        if ok:
            out[key] = value
    return out


def _lite_list(value) -> list[str]:
    """Kobold Lite's lists of strings: one string joined with "||$||", or a JSON list."""
    if isinstance(value, str):
        return [s for s in value.split("||$||") if s]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def _kobold_sampler(saved: dict, data: dict) -> dict:
    """Our sampler values from a Lite save's `savedsettings`, `logitbiasdict` and `tokenbans`."""
    out = {}
    for kobold_key, ours in _KOBOLD_SETTINGS.items():
        value = _number(saved.get(kobold_key))
        if value is not None:
            out[ours] = value
    order = saved.get("sampler_order")
    if isinstance(order, list):
        ids = [_number(x) for x in order]
        if ids and all(isinstance(x, int) and x in KOBOLD_SAMPLER_IDS for x in ids):
            out["order"] = [KOBOLD_SAMPLER_IDS[x] for x in ids]
    breakers = saved.get("dry_sequence_breakers")
    if isinstance(breakers, list) and all(isinstance(b, str) for b in breakers):
        out["dry_sequence_breakers"] = list(breakers)
    bias = data.get("logitbiasdict", saved.get("logitbiasdict"))
    if isinstance(bias, dict):
        kept = {str(k).strip(): _number(v) for k, v in bias.items() if isinstance(_number(k), int) and _number(k) >= 0}
        out["logit_bias"] = {k: v for k, v in kept.items() if v is not None}
    bans = _lite_list(data.get("tokenbans", saved.get("tokenbans")))
    if bans:
        out["banned_phrases"] = bans
    return out


def _kobold_mode(story: "Story", saved: dict) -> None:
    """Lite's chat mode becomes ours, with the names and the turns found in the text."""
    if _number(saved.get("opmode")) != LITE_CHAT_MODE:
        return
    story.mode = "chat"
    if isinstance(saved.get("chatname"), str) and saved["chatname"].strip():
        story.user_name = saved["chatname"].strip()
    opponents = _lite_list(saved.get("chatopponent"))
    if opponents:
        story.bot_name = opponents[0].strip()
    story.chat_turns = _lite_chat_turns(story.text, story.user_name, story.bot_name)


def _lite_chat_turns(text: str, user: str, bot: str) -> list[ChatTurn]:
    """Split a Lite chat transcript ("\\nUser: hi\\nBot: hello") into turns at the speakers' names."""
    pattern = re.compile(rf"^({re.escape(user)}|{re.escape(bot)}):[ \t]?", re.MULTILINE)
    marks = list(pattern.finditer(text))
    turns = []
    for mark, after in zip(marks, marks[1:] + [None]):
        body = text[mark.end():after.start() if after else len(text)].strip()
        turns.append(ChatTurn("user" if mark.group(1) == user else "bot", body))
    return turns


def _kobold_actions(actions, path) -> list[str]:
    if actions is None:
        return []
    if isinstance(actions, list):
        items = actions
    elif isinstance(actions, dict) and isinstance(actions.get("actions"), dict):   # KoboldAI United
        nested = actions["actions"]
        items = [nested[k].get("Selected Text", "") if isinstance(nested[k], dict) else nested[k]
                 for k in sorted(nested, key=_numeric_key)]
    elif isinstance(actions, dict):
        items = [actions[k] for k in sorted(actions, key=_numeric_key)]
    else:
        raise StoryFormatError(path, f"field 'actions' is a {type(actions).__name__}, expected a list")
    for i, a in enumerate(items):
        if not isinstance(a, str):
            raise StoryFormatError(path, f"field 'actions[{i}]' is a {type(a).__name__}, expected text")
    return items


def _numeric_key(k):
    try:
        return (0, int(k))
    except (TypeError, ValueError):
        return (1, str(k))


def _md_escape(text: str) -> str:
    return text.replace("#", "\\#")


# --- the tree in JSON ------------------------------------------------------------------

def _probability_json(p: float):
    return None if math.isnan(p) else p


def _passage_json(p: Passage, tokens: bool = True) -> dict:
    """One passage; fields at their defaults are left out to keep files small."""
    out = {"id": p.id, "parent": p.parent, "author": p.author, "text": p.text}
    optional = {"role": p.role, "edited": p.edited, "bookmarked": p.bookmarked, "chosen": p.chosen,
                "seed": p.seed, "model": p.model, "sampler": p.sampler}
    out.update({k: v for k, v in optional.items() if v is not None and v is not False and v != "" and v != {}})
    if p.tokens and tokens:
        out["tokens"] = _tokens_json(p.tokens)
    return out


def _tokens_json(tokens) -> list:
    return [[t.start, t.text, t.token, _probability_json(t.probability),
             [[a[0], a[1], _probability_json(a[2])] for a in t.alternatives]] for t in tokens]


def _tree_json(tree: StoryTree) -> dict:
    return {"current": tree.current, "passages": [_passage_json(p) for _, p in tree.depth_first()]}


# A passage's tokens are written as text directly, token by token, with what json.dumps writes
# for each value (the file is byte for byte the same). Not through json.dumps of lists: those
# are one C call that keeps the GIL (~0.5 s for a passage of 100,000 characters: 25,000 tokens
# with 5 alternatives each) and millions of short-lived lists, whose garbage collections took the
# GUI thread's turns too. Written in Python the file is built 5x faster and the thread that
# builds it (app/autosave.py's FileWriter) lets the GUI thread in every switch interval.
_json_string = json.encoder.encode_basestring     # what json.dumps(ensure_ascii=False) writes for a str


def _json_number(x) -> str:
    if x != x:
        return "null"                              # an unknown probability (_probability_json)
    return json.dumps(x) if x in (math.inf, -math.inf) else (
        float.__repr__(x) if isinstance(x, float) else int.__repr__(x))


def _token_text(t: Token) -> str:
    alternatives = ", ".join([f"[{_json_string(a[0])}, {int.__repr__(a[1])}, {_json_number(a[2])}]"
                              for a in t.alternatives])
    return (f"[{int.__repr__(t.start)}, {_json_string(t.text)}, {int.__repr__(t.token)}, "
            f"{_json_number(t.probability)}, [{alternatives}]]")


@dataclass(frozen=True)
class StorySnapshot:
    """The story at one moment, taken on the GUI thread in time proportional to the number of
    passages (not their text or tokens), then written out as JSON on any thread: the fields
    besides the trees (`to_json(trees=False)`) and each tree's current id and passages, parents
    first. Passages are frozen, so holding them keeps them as they were when taken."""

    data: dict
    tree: tuple           # (current id, [Passage, ...] depth first)
    chat: tuple


def take_snapshot(story: "Story") -> StorySnapshot:
    return StorySnapshot(story.to_json(trees=False),
                         (story.tree.current, [p for _, p in story.tree.depth_first()]),
                         (story.chat.current, [p for _, p in story.chat.depth_first()]))


class _PassageText:
    """Each passage's JSON text, kept while the passage lives: passages are frozen, so a passage
    object that was written once is written the same way again. A save or an autosave then only
    serialises what changed since the last one (a long story's tokens and alternatives are most
    of the work). Entries of passages no tree holds any more are dropped as the cache grows.
    A lock, since files are built on the writer thread (and tests build them on others)."""

    def __init__(self):
        self._texts: dict[int, tuple[Passage, str]] = {}
        self._lock = threading.Lock()

    def tree(self, current: int, passages: list) -> str:
        with self._lock:
            parts = [self._passage(p) for p in passages]
            if len(self._texts) > 4 * len(parts) + 4096:
                live = {id(p) for p in passages}
                self._texts = {k: v for k, v in self._texts.items() if k in live}
        return f'{{"current": {current}, "passages": [{", ".join(parts)}]}}'

    def _passage(self, p: Passage) -> str:
        hit = self._texts.get(id(p))
        if hit is not None and hit[0] is p:
            return hit[1]
        text = json.dumps(_passage_json(p, tokens=False), ensure_ascii=False)
        if p.tokens:
            text = f'{text[:-1]}, "tokens": [{", ".join([_token_text(t) for t in p.tokens])}]}}'
        self._texts[id(p)] = (p, text)
        return text


_passage_texts = _PassageText()
# stand-ins for the trees while the rest of a story is dumped; random, so no story text holds them
_TREE_MARK, _CHAT_MARK = (json.dumps(f"{uuid.uuid4()}") for _ in range(2))


def story_json_text(story: "Story | StorySnapshot") -> str:
    """The story (or a snapshot of it) as native JSON text (what `story_bytes` encodes), the
    trees from the cache."""
    snap = story if isinstance(story, StorySnapshot) else take_snapshot(story)
    data = dict(snap.data, chat=dict(snap.data["chat"]))
    data["tree"], data["chat"]["tree"] = json.loads(_TREE_MARK), json.loads(_CHAT_MARK)
    before, _, rest = json.dumps(data, ensure_ascii=False).partition(_TREE_MARK)
    between, _, after = rest.partition(_CHAT_MARK)
    # one join: each copy of a long story's text is a C call that keeps the GIL
    return "".join([before, _passage_texts.tree(*snap.tree), between, _passage_texts.tree(*snap.chat), after])


def _read_tree(data, path, name: str) -> StoryTree:
    """A StoryTree from its JSON, checked: one root (id 0), known parents, no cycles, tokens that
    spell their passage's text."""
    f = _Fields(data, path, name + ".")
    items = f.list("passages")
    if not items:
        raise StoryFormatError(path, f"field '{name}.passages' is empty: a story has at least its root passage")
    nodes: dict[int, Passage] = {}
    for i, item in enumerate(items):
        passage = _read_passage(item, path, f"{name}.passages[{i}]")
        if passage.id in nodes:
            raise StoryFormatError(path, f"field '{name}.passages[{i}].id': passage {passage.id} appears twice")
        nodes[passage.id] = passage
    if nodes.get(StoryTree.ROOT) is None or nodes[StoryTree.ROOT].parent is not None:
        raise StoryFormatError(path, f"field '{name}.passages': the root passage (id 0, parent null) is missing")
    children: dict[int, list[int]] = {pid: [] for pid in nodes}
    for p in nodes.values():
        if p.id != StoryTree.ROOT:
            if p.parent not in nodes:
                raise StoryFormatError(path, f"field '{name}.passages': passage {p.id} has parent {p.parent}, "
                                             f"which is not in the tree")
            children[p.parent].append(p.id)
    reached, stack = 0, [StoryTree.ROOT]
    while stack:            # every passage has one parent, so this visits each reachable one once
        reached += 1
        stack.extend(children[stack.pop()])
    if reached != len(nodes):
        raise StoryFormatError(path, f"field '{name}.passages': {len(nodes) - reached} passages are not "
                                     f"reachable from the root (their parents form a cycle)")
    for p in nodes.values():
        if p.chosen is not None and p.chosen not in children[p.id]:
            raise StoryFormatError(path, f"field '{name}.passages': passage {p.id} chose {p.chosen}, "
                                         f"which is not one of its children")
    current = f.int("current", StoryTree.ROOT, 0, 2 ** 63)
    if current not in nodes:
        raise StoryFormatError(path, f"field '{name}.current' is {current}, which is not a passage of the tree")
    return StoryTree.from_passages({pid: _with_children(p, children[pid]) for pid, p in nodes.items()}, current)


def _with_children(p: Passage, children: list[int]) -> Passage:
    return replace(p, children=tuple(children))


def _read_passage(item, path, where: str) -> Passage:
    pf = _Fields(item, path, where + ".")
    pid = pf.int("id", None, 0, 2 ** 63)
    parent = pf.optional_int("parent")
    text = pf.str("text")
    tokens = tuple(_read_token(t, text, path, f"{where}.tokens[{j}]") for j, t in enumerate(pf.list("tokens")))
    for j, (a, b) in enumerate(zip(tokens, tokens[1:])):
        if b.start < a.end:
            raise StoryFormatError(path, f"field '{where}.tokens[{j + 1}]' overlaps the token before it")
    return Passage(pid, parent, text, pf.choice("author", (WRITER, MODEL), WRITER), (), pf.optional_int("chosen"),
                   tokens, pf.bool("edited"), pf.optional_int("seed"), pf.obj("sampler"), pf.str("model"),
                   pf.choice("role", ("", "user", "bot"), ""), pf.bool("bookmarked"))


def _read_token(item, text: str, path, where: str) -> Token:
    shape = "[start, text, id, probability, alternatives]"
    if not isinstance(item, list) or len(item) != 5:
        raise StoryFormatError(path, f"field '{where}' is not {shape}")
    start, piece, token, probability, alternatives = item
    if not (_is_int(start) and isinstance(piece, str) and _is_int(token) and isinstance(alternatives, list)):
        raise StoryFormatError(path, f"field '{where}' is not {shape}")
    if not 0 <= start <= len(text) or text[start:start + len(piece)] != piece:
        raise StoryFormatError(path, f"field '{where}': the token {piece[:20]!r} is not at {start} in its passage")
    alts = []
    for alt in alternatives:
        if not (isinstance(alt, list) and len(alt) == 3 and isinstance(alt[0], str) and _is_int(alt[1])):
            raise StoryFormatError(path, f"field '{where}' has an alternative that is not [text, id, probability]")
        alts.append((alt[0], alt[1], _read_probability(alt[2], path, where)))
    return Token(piece, token, _read_probability(probability, path, where), tuple(alts), start)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_probability(value, path, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise StoryFormatError(path, f"field '{where}' has probability {value!r}, expected 0..1 or null")
    return float(value)


def _tree_from_v1(f: "_Fields", path) -> StoryTree:
    """A version 1 story (one text and the stretches the model wrote) as a tree with one branch."""
    text = f.str("text")
    gens = []
    for i, item in enumerate(f.list("generations")):
        gf = _Fields(item, path, f"generations[{i}].")
        gen = Generation(gf.int("start", 0, 0, len(text)), gf.str("text"), gf.optional_int("seed"), gf.str("model"))
        if gen.end > len(text):
            raise StoryFormatError(path, f"field 'generations[{i}]' runs past the end of the text")
        gens.append(gen)
    pieces, pos = [], 0          # (text, generation or None), in order along the text
    for gen in sorted(gens, key=lambda g: g.start):
        if gen.start < pos or not gen.text:
            continue             # overlapping records: the earlier one wins
        if gen.start > pos:
            pieces.append((text[pos:gen.start], None))
        pieces.append((gen.text, gen))
        pos = gen.end
    if pos < len(text):
        pieces.append((text[pos:], None))
    tree = StoryTree(pieces.pop(0)[0] if pieces and pieces[0][1] is None else "")
    for piece, gen in pieces:
        node = tree.add_child(tree.current, piece, MODEL if gen else WRITER,
                              seed=gen.seed if gen else None, model=gen.model if gen else "")
        tree.go_to(node.id)
    return tree


class _Fields:
    """Typed access to one JSON object that raises StoryFormatError naming the field."""

    def __init__(self, data, path, prefix=""):
        if not isinstance(data, dict):
            raise StoryFormatError(path, f"field '{prefix.rstrip('.') or '<top>'}' is not an object")
        self.data, self.path, self.prefix = data, path, prefix

    def _bad(self, name, expected):
        if name not in self.data:
            return StoryFormatError(self.path, f"field '{self.prefix}{name}' is missing, expected {expected}")
        value = self.data[name]
        return StoryFormatError(self.path, f"field '{self.prefix}{name}' is {type(value).__name__} "
                                           f"{str(value)[:40]!r}, expected {expected}")

    def str(self, name, default=""):
        value = self.data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(name, "text")
        return value

    def int(self, name, default, lo, hi):
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self._bad(name, f"an integer in {lo}..{hi}")
        return value

    def optional_int(self, name):
        value = self.data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self._bad(name, "an integer or null")
        return value

    def bool(self, name, default=False):
        value = self.data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def list(self, name):
        value = self.data.get(name, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(name, "a list")
        return value

    def str_list(self, name):
        items = self.list(name)
        if not all(isinstance(x, str) for x in items):
            raise self._bad(name, "a list of text")
        return list(items)

    def obj(self, name):
        value = self.data.get(name, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(name, "an object")
        return dict(value)

    def choice(self, name, choices, default):
        value = self.str(name, default)
        if value not in choices:
            raise self._bad(name, " or ".join(repr(c) for c in choices))
        return value



# --- reading and writing files -------------------------------------------------------

def read_json_file(path) -> object:
    """Parse a JSON file, raising StoryFormatError for missing, huge, non-UTF-8 or malformed files."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_STORY_FILE_BYTES:
            raise StoryFormatError(path, f"{size} bytes is larger than any story ({MAX_STORY_FILE_BYTES} max)")
        raw = path.read_bytes()
    except OSError as e:
        raise StoryFormatError(path, f"cannot read: {e.strerror or e}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoryFormatError(path, f"not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise StoryFormatError(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except ValueError as e:        # an integer of more than 4300 digits
        raise StoryFormatError(path, f"not valid JSON: {e}") from e
    except RecursionError as e:
        raise StoryFormatError(path, "not a story: its JSON is nested too deeply") from e
    if _SURROGATE_ESCAPE.search(raw):
        doc = _without_lone_surrogates(doc)
    return doc


# JSON may spell half of a UTF-16 surrogate pair alone ("\ud800"; JavaScript strings allow it, so a
# Kobold Lite save can hold one). Python keeps it in the str, and no UTF-8 file can: the story could
# not be saved again. Each becomes U+FFFD, as any UTF-8 decoder does with an invalid sequence.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(doc):
    """The document with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    def fix(value):
        return _LONE_SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value
    root = [doc]
    stack = [root]          # containers whose items to fix (a loop: a parsed document can nest ~1000 deep)
    while stack:
        container = stack.pop()
        if isinstance(container, list):
            for i, item in enumerate(container):
                container[i] = fix(item)
                if isinstance(item, (list, dict)):
                    stack.append(item)
        else:
            items = [(fix(k), v) for k, v in container.items()]
            container.clear()
            for k, v in items:
                container[k] = fix(v)
                if isinstance(v, (list, dict)):
                    stack.append(v)
    return root[0]


def load_story(path) -> Story:
    """Open a native story or a KoboldAI/Kobold Lite save, whichever the file is."""
    data = read_json_file(path)
    if isinstance(data, dict) and "format" in data:
        return Story.from_json(data, path)
    if isinstance(data, dict) and ("prompt" in data or "actions" in data):
        return Story.from_kobold(data, path)
    raise StoryFormatError(path, "neither a NeoX Writer story (no 'format' field) nor a KoboldAI save")


def story_bytes(story: "Story | StorySnapshot") -> bytes:
    # no indentation: a long story's tokens and their alternatives would take a line each
    return story_json_text(story).encode("utf-8")


def kobold_bytes(story: Story) -> bytes:
    return json.dumps(story.to_kobold(), ensure_ascii=False, indent=1).encode("utf-8")


def copy_story(story: Story) -> Story:
    """An independent copy (for handing to another thread); history is not copied."""
    return Story.from_json(json.loads(json.dumps(story.to_json())))


__all__ = ["Story", "StoryFormatError", "WorldInfoEntry", "Generation", "Snapshot", "History",
           "ChatTurn", "load_story", "story_bytes", "kobold_bytes", "read_json_file", "copy_story",
           "STORY_VERSION", "CHARS_PER_TOKEN", "story_json_text", "StorySnapshot", "take_snapshot"]
