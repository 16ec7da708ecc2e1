"""What the story tree costs the GUI thread: a keystroke's sync, an undo step, a save, an undo.

    python bench/story_tree.py [--sizes 10000,100000,1000000] [--passages 10,100,1000]

The window hands the whole text to the story after every keystroke (`Story.text = ...`, which
finds the change and gives it to the passages it touches), records an undo step after a pause
in typing (`checkpoint`, a snapshot of the tree), saves and undoes. A save (or an autosave) costs
the GUI thread a snapshot of the story (`take_snapshot`, one reference per passage); the bytes
(`story_bytes`) are built and written on the writer thread. The first save of a story serialises
every passage; later ones only the passages that changed. Each story is one branch of N passages of
model text with a token every 4 characters (tokens with 5 alternatives each, as the app keeps
them), plus 3 siblings at every passage. Times are the median of 15 runs, in milliseconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.passages import MODEL, Token  # noqa: E402
from app.story import Story, story_bytes, take_snapshot  # noqa: E402

RUNS = 15


def make_story(n_chars: int, n_passages: int) -> Story:
    s = Story("Once upon a time. ")
    per = max(4, n_chars // n_passages)
    for p in range(n_passages):
        text = ("word " * (per // 5 + 1))[:per]
        tokens = tuple(Token(text[i:i + 4], 100 + i, 0.5, tuple((f"alt{k}", k, 0.1) for k in range(5)), i)
                       for i in range(0, len(text), 4))
        parent = s.tree.current
        for sibling in range(3):
            s.tree.add_child(parent, f"sibling {sibling} of {p}", MODEL)
        node = s.tree.add_child(parent, text, MODEL, tokens=tokens)
        s.tree.go_to(node.id)
    s.checkpoint("built")
    return s


def median_ms(fn) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(n_chars: int, n_passages: int) -> dict:
    s = make_story(n_chars, n_passages)
    middle = len(s.text) // 2
    state = {"i": 0}

    def keystroke():                      # one character typed in the middle of the story
        text = s.text
        state["i"] += 1
        s.text = text[:middle] + "x" + text[middle:]

    t = time.perf_counter()
    out = {"file_MB": len(story_bytes(s)) / 1e6, "first_save": (time.perf_counter() - t) * 1000}
    out["keystroke"] = median_ms(keystroke)
    out["checkpoint"] = median_ms(lambda: (keystroke(), s.checkpoint("edit")))
    out["save_after_edit"] = median_ms(lambda: (keystroke(), story_bytes(s)))
    out["snapshot"] = median_ms(lambda: take_snapshot(s))
    out["undo"] = median_ms(lambda: s.undo())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--passages", default="10,100,1000")
    args = parser.parse_args()
    print("| characters | passages | keystroke ms | keystroke + undo step ms | undo ms | first save ms "
          "| keystroke + save ms | GUI thread's part of a save ms | file MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(x) for x in args.sizes.split(",")):
        for passages in (int(x) for x in args.passages.split(",")):
            r = measure(size, passages)
            print(f"| {size:,} | {passages:,} | {r['keystroke']:.2f} | {r['checkpoint']:.2f} | {r['undo']:.2f} "
                  f"| {r['first_save']:.0f} | {r['save_after_edit']:.0f} | {r['snapshot']:.2f} "
                  f"| {r['file_MB']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
