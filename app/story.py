"""The story document: text, generations, memory, author's note, world info, chat turns.

A `Story` is plain data with no Qt in it, so the file formats and the undo history can be
tested without a window. Undo/Redo works on whole `Snapshot`s of the text and its
generations: a generation, a retry, a token swap or a batch of typing each become one step,
which is what a writer expects from the Undo button next to Generate.

File formats (see docs/story-format.md):
- the native versioned JSON (``"format": "neox-writer-story"``, ``"version": 1``);
- KoboldAI / Kobold Lite JSON (``prompt`` + ``actions`` + ``memory`` + ``worldinfo`` ...);
- plain text and Markdown export.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STORY_FORMAT = "neox-writer-story"
STORY_VERSION = 1
MAX_STORY_FILE_BYTES = 256 * 1024 * 1024   # a story file larger than this is not one of ours
MAX_HISTORY = 200                          # undo steps kept in memory


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

    def matches(self, recent_text: str) -> bool:
        """True when this entry belongs in a context whose recent story is `recent_text`."""
        if self.always_on:
            return True
        lowered = recent_text.lower()
        return any(key.strip() and key.strip().lower() in lowered for key in self.keys)


@dataclass(frozen=True)
class Generation:
    """One stretch of model-written text: where it starts in the story and what it says."""
    start: int
    text: str
    seed: int | None = None
    model: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class Snapshot:
    """One undo step: the story text and which parts of it the model wrote."""
    text: str
    generations: tuple[Generation, ...] = ()
    label: str = ""

    def same_content(self, other: "Snapshot | None") -> bool:
        return other is not None and self.text == other.text and self.generations == other.generations


class History:
    """A linear undo/redo list of snapshots; recording after an undo drops the redo branch."""

    def __init__(self, initial: Snapshot):
        self._steps: list[Snapshot] = [initial]
        self._pos = 0

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


@dataclass
class Story:
    """Everything a story file holds; the GUI edits it and the worker builds contexts from it."""
    text: str = ""
    title: str = ""
    memory: str = ""
    authors_note: str = ""
    authors_note_depth: int = 80        # tokens before the end of the context
    world_info: list[WorldInfoEntry] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    sampler: dict = field(default_factory=dict)
    stop_sequences: list[str] = field(default_factory=list)
    model_id: str = ""
    mode: str = "story"                 # "story" or "chat"
    chat_template: str = ""
    user_name: str = "You"
    bot_name: str = "Bot"
    chat_turns: list[ChatTurn] = field(default_factory=list)

    def __post_init__(self):
        self.history = History(self.snapshot("open"))

    # --- undo / redo -----------------------------------------------------------------
    def snapshot(self, label: str = "") -> Snapshot:
        return Snapshot(self.text, tuple(self.generations), label)

    def restore(self, snapshot: Snapshot) -> None:
        self.text = snapshot.text
        self.generations = list(snapshot.generations)

    def checkpoint(self, label: str) -> bool:
        """Record the current text as an undo step (no-op when nothing changed)."""
        return self.history.record(self.snapshot(label))

    def undo(self) -> bool:
        """Step back one generation or edit; unrecorded typing is recorded first so Redo returns it."""
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

    # --- generations -----------------------------------------------------------------
    def last_generation(self) -> Generation | None:
        """The newest generation if it is still intact at the end of the text."""
        if not self.generations:
            return None
        gen = self.generations[-1]
        if gen.end == len(self.text) and self.text[gen.start:gen.end] == gen.text:
            return gen
        return None

    def add_generation(self, start: int, text: str, seed: int | None = None, model: str = "") -> None:
        """Record that the model wrote `text` at `start` (the text itself is already in self.text)."""
        if text:
            self.generations.append(Generation(start, text, seed, model or self.model_id))

    def drop_last_generation(self) -> Generation | None:
        """Remove the newest generation's text (for Retry); returns it or None if there is none intact."""
        gen = self.last_generation()
        if gen is None:
            return None
        self.text = self.text[:gen.start]
        self.generations.pop()
        return gen

    def forget_edited_generations(self) -> None:
        """Drop generation records whose text the user has since edited."""
        self.generations = [g for g in self.generations if self.text[g.start:g.end] == g.text]

    # --- native file format ----------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": STORY_FORMAT,
            "version": STORY_VERSION,
            "title": self.title,
            "text": self.text,
            "generations": [asdict(g) for g in self.generations],
            "memory": self.memory,
            "authors_note": self.authors_note,
            "authors_note_depth": self.authors_note_depth,
            "world_info": [asdict(w) for w in self.world_info],
            "sampler": dict(self.sampler),
            "stop_sequences": list(self.stop_sequences),
            "model_id": self.model_id,
            "mode": self.mode,
            "chat": {
                "template": self.chat_template,
                "user_name": self.user_name,
                "bot_name": self.bot_name,
                "turns": [asdict(t) for t in self.chat_turns],
            },
        }

    @classmethod
    def from_json(cls, data, path=None) -> "Story":
        """Build a story from the native JSON; raises StoryFormatError naming the bad field."""
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
        text = f.str("text")
        chat = f.obj("chat")
        cf = _Fields(chat, path, "chat.")
        story = cls(
            text=text, title=f.str("title"), memory=f.str("memory"), authors_note=f.str("authors_note"),
            authors_note_depth=f.int("authors_note_depth", 80, 0, 1_000_000),
            sampler=f.obj("sampler"), stop_sequences=f.str_list("stop_sequences"),
            model_id=f.str("model_id"), mode=f.choice("mode", ("story", "chat"), "story"),
            chat_template=cf.str("template"), user_name=cf.str("user_name", "You"),
            bot_name=cf.str("bot_name", "Bot"),
        )
        for i, item in enumerate(f.list("world_info")):
            wf = _Fields(item, path, f"world_info[{i}].")
            story.world_info.append(WorldInfoEntry(wf.str_list("keys"), wf.str("content"),
                                                   wf.bool("always_on"), wf.str("comment")))
        for i, item in enumerate(f.list("generations")):
            gf = _Fields(item, path, f"generations[{i}].")
            gen = Generation(gf.int("start", 0, 0, len(text)), gf.str("text"),
                             gf.optional_int("seed"), gf.str("model"))
            if gen.end > len(text):
                raise StoryFormatError(path, f"field 'generations[{i}]' runs past the end of the text")
            story.generations.append(gen)
        for i, item in enumerate(cf.list("turns")):
            tf = _Fields(item, path, f"chat.turns[{i}].")
            story.chat_turns.append(ChatTurn(tf.choice("role", ("user", "bot"), "user"), tf.str("text")))
        story.history = History(story.snapshot("open"))
        return story

    # --- KoboldAI / Kobold Lite ------------------------------------------------------
    def to_kobold(self) -> dict:
        """A Kobold Lite save: the text before the first generation is the prompt, each generation an action."""
        prompt, actions = self._split_actions()
        settings = {k: self.sampler[src] for k, src in _KOBOLD_SETTINGS.items() if src in self.sampler}
        return {
            "gamestarted": True,
            "prompt": prompt,
            "memory": self.memory,
            "authorsnote": self.authors_note,
            "anotetemplate": "[Author's note: <|>]",
            "anotestr": self.authors_note_depth * CHARS_PER_TOKEN,
            "actions": actions,
            "actions_metadata": {},
            "worldinfo": [{
                "key": ",".join(w.keys), "keysecondary": "", "keyanti": "", "content": w.content,
                "comment": w.comment, "folder": None, "selective": False, "constant": w.always_on,
                "probability": 100,
            } for w in self.world_info],
            "wifolders_d": {}, "wifolders_l": [],
            "extrastopseq": "||$||".join(self.stop_sequences),
            "savedsettings": settings,
        }

    def _split_actions(self) -> tuple[str, list[str]]:
        cuts = sorted({g.start for g in self.generations} | {g.end for g in self.generations})
        cuts = [c for c in cuts if 0 < c < len(self.text)]
        pieces, last = [], 0
        for c in cuts:
            pieces.append(self.text[last:c])
            last = c
        pieces.append(self.text[last:])
        return pieces[0], [p for p in pieces[1:] if p]

    @classmethod
    def from_kobold(cls, data, path=None) -> "Story":
        """Read a KoboldAI client or Kobold Lite save (actions as a list, a dict, or United's nested form)."""
        if not isinstance(data, dict) or ("prompt" not in data and "actions" not in data):
            raise StoryFormatError(path, "not a KoboldAI story: no 'prompt' or 'actions' field")
        f = _Fields(data, path)
        prompt = f.str("prompt")
        story = cls(memory=f.str("memory"), authors_note=f.str("authorsnote"))
        anotestr = data.get("anotestr")
        if isinstance(anotestr, (int, float)) and not isinstance(anotestr, bool) and anotestr >= 0:
            story.authors_note_depth = max(1, round(anotestr / CHARS_PER_TOKEN))
        text = prompt
        for i, action in enumerate(_kobold_actions(data.get("actions"), path)):
            story.generations.append(Generation(len(text), action))
            text += action
        story.text = text
        for i, item in enumerate(f.list("worldinfo")):
            wf = _Fields(item, path, f"worldinfo[{i}].")
            keys = [k.strip() for k in wf.str("key").split(",") if k.strip()]
            story.world_info.append(WorldInfoEntry(keys, wf.str("content"), wf.bool("constant"), wf.str("comment")))
        stops = data.get("extrastopseq")
        if isinstance(stops, str) and stops:
            story.stop_sequences = [s for s in stops.split("||$||") if s]
        saved = data.get("savedsettings")
        if isinstance(saved, dict):
            for kobold_key, ours in _KOBOLD_SETTINGS.items():
                value = saved.get(kobold_key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    story.sampler[ours] = value
        story.history = History(story.snapshot("open"))
        return story

    # --- plain exports ---------------------------------------------------------------
    def to_plain_text(self) -> str:
        return self.text if self.mode == "story" else self._transcript_lines("{name}: {text}")

    def to_markdown(self) -> str:
        title = self.title or "Untitled story"
        out = [f"# {_md_escape(title)}", ""]
        if self.mode == "chat":
            out.append(self._transcript_lines("**{name}:** {text}", "\n\n"))
        else:
            out.append(self.text)
        if self.memory.strip():
            out += ["", "---", "", "## Memory", "", self.memory]
        return "\n".join(out).rstrip() + "\n"

    def _transcript_lines(self, fmt: str, sep: str = "\n") -> str:
        names = {"user": self.user_name, "bot": self.bot_name}
        return sep.join(fmt.format(name=names[t.role], text=t.text) for t in self.chat_turns)


CHARS_PER_TOKEN = 4   # Kobold Lite measures the author's note depth in characters; we measure tokens

# Kobold Lite `savedsettings` key -> our sampler setting name
_KOBOLD_SETTINGS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typ_s": "typical", "tfs_s": "tfs", "top_a": "top_a", "rep_pen": "rep_pen",
    "rep_pen_range": "rep_pen_range", "rep_pen_slope": "rep_pen_slope",
    "miro_type": "mirostat", "miro_tau": "mirostat_tau", "miro_eta": "mirostat_eta",
    "max_length": "max_new_tokens", "max_context_length": "n_ctx",
}


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


class _Fields:
    """Typed access to one JSON object that raises StoryFormatError naming the field."""

    def __init__(self, data, path, prefix=""):
        if not isinstance(data, dict):
            raise StoryFormatError(path, f"field '{prefix.rstrip('.') or '<top>'}' is not an object")
        self.data, self.path, self.prefix = data, path, prefix

    def _bad(self, name, expected):
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
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoryFormatError(path, f"not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise StoryFormatError(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e


def load_story(path) -> Story:
    """Open a native story or a KoboldAI/Kobold Lite save, whichever the file is."""
    data = read_json_file(path)
    if isinstance(data, dict) and "format" in data:
        return Story.from_json(data, path)
    if isinstance(data, dict) and ("prompt" in data or "actions" in data):
        return Story.from_kobold(data, path)
    raise StoryFormatError(path, "neither a NeoX Writer story (no 'format' field) nor a KoboldAI save")


def story_bytes(story: Story) -> bytes:
    return json.dumps(story.to_json(), ensure_ascii=False, indent=1).encode("utf-8")


def kobold_bytes(story: Story) -> bytes:
    return json.dumps(story.to_kobold(), ensure_ascii=False, indent=1).encode("utf-8")


def copy_story(story: Story) -> Story:
    """An independent copy (for handing to another thread); history is not copied."""
    return Story.from_json(json.loads(json.dumps(story.to_json())))


__all__ = ["Story", "StoryFormatError", "WorldInfoEntry", "Generation", "Snapshot", "History",
           "ChatTurn", "load_story", "story_bytes", "kobold_bytes", "read_json_file", "copy_story",
           "STORY_VERSION"]
