"""The story document without a window: undo history, file formats, Kobold import/export,
exports, chat templates, the prompt builder, settings and atomic writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.autosave import autosave_bytes, find_recovery, write_atomic  # noqa: E402
from app.chattemplates import TEMPLATES, strip_reply, template_for_model  # noqa: E402
from app.prompt import build_prompt, describe, tail_chars  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.story import (STORY_VERSION, ChatTurn, Generation, Story, StoryFormatError, WorldInfoEntry,  # noqa: E402
                       load_story, story_bytes)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def written(story: Story, tmp_path: Path, name="s.json") -> Path:
    path = tmp_path / name
    path.write_bytes(story_bytes(story))
    return path


# --- undo history (the tree's own tests are in test_story_tree.py) ---------------------

def test_undo_redo_walk_generations_and_edits():
    s = Story()
    s.text = "Once"
    s.checkpoint("edit")
    s.add_generation(" upon")
    s.checkpoint("generation")
    s.text += " a time"            # typing not yet recorded
    assert s.undo() and s.text == "Once upon"      # the typing was recorded first, so...
    assert s.redo() and s.text == "Once upon a time"   # ...Redo brings it back
    assert s.undo() and s.undo() and s.text == "Once" and s.generations == []
    assert s.redo() and s.generations == [Generation(4, " upon")]


def test_recording_after_undo_drops_the_redo_branch():
    s = Story()
    for word in ("a", "ab", "abc"):
        s.text = word
        s.checkpoint("edit")
    s.undo()
    s.text = "abX"
    s.checkpoint("edit")
    assert not s.redo() and s.text == "abX"


def test_retry_goes_back_to_the_parent_of_the_last_generation():
    s = Story(text="Hi")
    s.add_generation(" there")
    assert s.last_generation() == Generation(2, " there")
    s.text = "Hi therE"            # edited: still a generation to retry from, but no longer intact
    assert s.last_generation() is None
    assert s.retry_point().text == " therE" and s.text == "Hi"
    assert s.retry_point() is None          # the root is the writer's


# --- native format ---------------------------------------------------------------------

def full_story() -> Story:
    s = Story(text="The ship sailed.", title="Voyage", memory="Captain Ahab.", authors_note="Gloomy.",
              authors_note_depth=40, sampler={"temperature": 0.5, "top_k": 12, "seed": 7},
              stop_sequences=["\n\n"], model_id="pythia-70m", mode="chat", chat_template="dolly",
              user_name="Ann", bot_name="Max")
    s.world_info = [WorldInfoEntry(["ship", "boat"], "The ship is the Pequod.", False, "vessel"),
                    WorldInfoEntry([], "It is 1851.", True)]
    s.add_generation(" It sank.", seed=7, model="pythia-70m")
    s.chat_turns = [ChatTurn("user", "Hello"), ChatTurn("bot", "Hi Ann")]
    return s


def test_native_round_trip(tmp_path):
    s = full_story()
    back = load_story(written(s, tmp_path))
    assert back.to_json() == s.to_json()
    assert json.loads(story_bytes(s))["version"] == STORY_VERSION


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(version=STORY_VERSION + 1), "newer NeoX Writer"),
    (lambda d: d.update(version=1, text=5), "field 'text'"),
    (lambda d: d.update(world_info=[{"keys": "ship"}]), "world_info[0].keys"),
    (lambda d: d.update(version=1, text="short", generations=[{"start": 2, "text": "far too long"}]),
     "generations[0]"),
    (lambda d: d.update(mode="poetry"), "field 'mode'"),
    (lambda d: d.update(authors_note_depth=-3), "authors_note_depth"),
])
def test_bad_story_files_name_the_problem(tmp_path, mutate, needle):
    data = full_story().to_json()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StoryFormatError) as e:
        load_story(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_corrupt_and_foreign_files(tmp_path):
    cut = tmp_path / "cut.json"
    cut.write_bytes(story_bytes(full_story())[:50])
    with pytest.raises(StoryFormatError, match="not valid JSON"):
        load_story(cut)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StoryFormatError, match="not UTF-8"):
        load_story(binary)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(StoryFormatError, match="neither"):
        load_story(other)
    with pytest.raises(StoryFormatError, match="cannot read"):
        load_story(tmp_path / "missing.json")


# --- KoboldAI / Kobold Lite ------------------------------------------------------------

KOBOLD_LITE = {
    "gamestarted": True, "prompt": "You wake up in a cave.", "memory": "You are a knight.",
    "authorsnote": "Dark fantasy.", "anotetemplate": "[Author's note: <|>]", "anotestr": 320,
    "actions": [" A dragon sleeps nearby.", " You draw your sword."], "actions_metadata": {},
    "worldinfo": [{"key": "dragon,wyrm", "keysecondary": "", "keyanti": "", "content": "Dragons breathe fire.",
                   "comment": "", "folder": None, "selective": False, "constant": False, "probability": 100},
                  {"key": "", "content": "Magic is rare.", "constant": True}],
    "wifolders_d": {}, "wifolders_l": [], "extrastopseq": "\\n\\n||$||The End",
    "savedsettings": {"temperature": 0.8, "top_k": 50, "rep_pen": 1.15, "typ_s": 0.9, "max_length": 120},
}


def test_kobold_lite_import(tmp_path):
    path = tmp_path / "lite.json"
    path.write_text(json.dumps(KOBOLD_LITE), encoding="utf-8")
    s = load_story(path)
    assert s.text == "You wake up in a cave. A dragon sleeps nearby. You draw your sword."
    assert [g.text for g in s.generations] == [" A dragon sleeps nearby.", " You draw your sword."]
    assert s.memory == "You are a knight." and s.authors_note == "Dark fantasy."
    assert s.authors_note_depth == 80     # 320 characters at 4 per token
    assert s.world_info[0].keys == ["dragon", "wyrm"] and s.world_info[1].always_on
    assert s.stop_sequences == ["\\n\\n", "The End"]
    assert s.sampler == {"temperature": 0.8, "top_k": 50, "rep_pen": 1.15, "typical": 0.9, "max_new_tokens": 120}


@pytest.mark.parametrize("actions", [
    {"0": " one.", "1": " two."},                                         # KoboldAI client dict
    {"action_count": 1, "actions": {"0": {"Selected Text": " one."}, "1": {"Selected Text": " two."}}},  # United
])
def test_kobold_action_variants(tmp_path, actions):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"prompt": "Zero.", "actions": actions}), encoding="utf-8")
    assert load_story(path).text == "Zero. one. two."


def test_kobold_bad_actions_are_named(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"prompt": "Zero.", "actions": [" ok", 3]}), encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"actions\[1\]"):
        load_story(path)


def test_kobold_export_round_trips_through_import(tmp_path):
    s = full_story()
    s.mode = "story"
    data = s.to_kobold()
    assert data["prompt"] == "The ship sailed." and data["actions"] == [" It sank."]
    assert data["worldinfo"][0]["key"] == "ship,boat" and data["worldinfo"][1]["constant"] is True
    assert data["savedsettings"] == {"temperature": 0.5, "top_k": 12}
    path = tmp_path / "out.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    back = load_story(path)
    assert back.text == s.text and back.memory == s.memory and back.authors_note_depth == s.authors_note_depth
    assert [(w.keys, w.content, w.always_on) for w in back.world_info] == \
        [(w.keys, w.content, w.always_on) for w in s.world_info]


def test_plain_and_markdown_export():
    s = full_story()
    assert "**Ann:** Hello" in s.to_markdown() and s.to_plain_text() == "Ann: Hello\nMax: Hi Ann"
    s.mode = "story"
    assert s.to_plain_text() == s.text
    md = s.to_markdown()
    assert md.startswith("# Voyage\n") and s.text in md and "## Memory" in md


# --- chat templates --------------------------------------------------------------------

def test_templates_are_picked_by_model_family():
    assert template_for_model("RedPajama-INCITE-Chat-3B-v1-q4_0.bin").name == "redpajama"
    assert template_for_model("dolly-v2-3b.ggmlv3.q5_1.bin").name == "dolly"
    assert template_for_model("oasst-sft-4-pythia-12b.bin").name == "oasst"
    assert template_for_model("pythia-410m-deduped-q4_0.bin").name == "plain"


def test_template_prompts_and_stops():
    turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hello!"), ChatTurn("user", "Name a colour.")]
    plain = TEMPLATES["plain"]
    assert plain.prompt(turns, "Ann", "Max") == "Ann: Hi\nMax: Hello!\nAnn: Name a colour.\nMax:"
    assert plain.stop_sequences("Ann", "Max") == ["\nAnn:", "\nMax:"]
    rp = TEMPLATES["redpajama"].prompt(turns, "Ann", "Max")
    assert rp.endswith("<human>: Name a colour.\n<bot>:")
    dolly = TEMPLATES["dolly"].prompt(turns[:1], "Ann", "Max")
    assert dolly.endswith("### Instruction:\nHi\n\n### Response:\n") and "### End" in TEMPLATES["dolly"].stops
    oasst = TEMPLATES["oasst"].prompt(turns[:1], "Ann", "Max")
    assert oasst == "<|prompter|>Hi<|endoftext|><|assistant|>"
    # a last bot turn stays open so generation continues it
    assert plain.prompt(turns[:2], "Ann", "Max").endswith("Max: Hello!")
    assert strip_reply(" Blue.\nAnn: and", plain.stop_sequences("Ann", "Max")) == "Blue."


# --- prompt builder --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from engine.tokenizer import load_tokenizer
    return load_tokenizer(None, str(FIXTURES / "tokenizer.json"))


def test_author_note_goes_depth_tokens_before_the_end(tokenizer):
    text = "The knight rode on through the rain and the wind. " * 20
    prompt = build_prompt(tokenizer, text=text, memory="Sir Bors is tired.", authors_note="Sad tone.",
                          authors_note_depth=10,
                          world_info=[WorldInfoEntry(["knight"], "Knights serve the king."),
                                      WorldInfoEntry(["dragon"], "Dragons are extinct."),
                                      WorldInfoEntry([], "It is winter.", always_on=True)])
    assert prompt.memory == "Sir Bors is tired.\nKnights serve the king.\nIt is winter.\n"
    assert "Dragons" not in prompt.memory
    before, after = prompt.story.split("\n[Author's note: Sad tone.]\n")
    assert before + after == text
    n_after = len(tokenizer.encode(after))
    assert 9 <= n_after <= 11      # re-encoding a cut string may merge one token differently
    assert tail_chars(tokenizer, text, 10) == len(after)


def test_describe_labels_the_engine_window(tokenizer):
    from engine.context import ContextShifter
    text = "A story that is long enough to be cut. " * 40
    prompt = build_prompt(tokenizer, text=text, memory="Memory line.", authors_note="Note.", authors_note_depth=5)
    memory_ids = tokenizer.encode(prompt.memory)
    story_ids = tokenizer.encode(prompt.story)
    window = ContextShifter().fit(memory_ids, story_ids, 128, 20)
    ctx = describe(tokenizer, prompt, window, 108)
    assert [p.kind for p in ctx.parts] == ["memory", "story", "author's note", "story"]
    assert ctx.n_tokens == len(window.tokens) <= 108 and ctx.dropped_tokens == window.dropped_tokens > 0
    assert sum(p.n_tokens for p in ctx.parts) == ctx.n_tokens


# --- settings and files ----------------------------------------------------------------

def test_settings_ignore_bad_values(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"font_size": "huge", "theme": "dark", "unknown": 1, "threads": 4}), encoding="utf-8")
    s = Settings.load(path)
    assert s.get("font_size") == 12 and s.get("theme") == "dark" and s.get("threads") == 4
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    assert Settings.load(tmp_path / "broken.json").get("theme") == "system"
    with pytest.raises(KeyError):
        s.set("colour", "red")


def test_write_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "deep" / "file.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]    # no temp file left


def test_autosave_record_is_found_and_a_broken_one_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path))
    assert find_recovery() is None
    from app.autosave import autosave_path
    write_atomic(autosave_path(), autosave_bytes(full_story(), "/stories/voyage.json"))
    rec = find_recovery()
    assert rec.story.text == full_story().text and rec.story_path == "/stories/voyage.json"
    assert "voyage.json" in rec.describe()
    autosave_path().write_bytes(b"{ half a reco")
    assert find_recovery() is None
