"""Kill (SIGKILL) a process at random moments while it saves and autosaves a story, and check the files.

    python tests/save_kill.py --trials 500 [--folder DIR] [--seed N] [--max-delay-ms 25]

This process imports the app once and stays single-threaded, so it can fork cheaply: each trial
forks a child that writes the autosave after every change and saves the story every third one,
through `app.autosave.save_file` (what the app's FileWriter runs: temp file, fsync, rename, then
the autosave goes), reporting each completed write through a pipe. The parent kills it after a
random delay and checks, as the next start of the app would see them:
- the story file, once there is one, opens with `load_story` and is exactly one complete saved
  version, byte for byte, never older than a save reported or a version seen before;
- the autosave, when there is one, is offered back by `find_recovery` as a complete version; and
  it is there whenever the newest change is not in the story file.
Prints one JSON object: trials, kills that landed inside a write (a temp file was left), saves
first seen after a kill (completed but not yet reported), and every violation.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.autosave import autosave_bytes, find_recovery, save_file  # noqa: E402
from app.story import Story, load_story, story_bytes  # noqa: E402

AUTOSAVE, SAVE = 1, 2


class Versions:
    """The story after change n: a ~100 KB story whose title says n (so a file tells its version)."""

    def __init__(self):
        self.story = Story(text="Chapter one.\n" + "The tide came in over the flats, slow and grey. " * 2000)
        self.story.add_generation(" A gull cried." * 40, seed=1)

    def story_at(self, n: int) -> Story:
        self.story.title = f"change {n}"
        return self.story

    def story_bytes(self, n: int) -> bytes:
        return story_bytes(self.story_at(n))


def child(folder: Path, versions: Versions, start: int, report: int) -> None:
    """Edit, autosave, and every third change save, until killed."""
    n = start
    while True:
        save_file(folder / "autosave.json", autosave_bytes(versions.story_at(n), str(folder / "story.json")))
        os.write(report, struct.pack("<ii", n, AUTOSAVE))
        if n % 3 == 2:
            save_file(folder / "story.json", versions.story_bytes(n), obsoletes=folder / "autosave.json")
            os.write(report, struct.pack("<ii", n, SAVE))
        n += 1


def version_of(story) -> int:
    return int(story.title.split()[-1])


def check(folder: Path, versions: Versions, last_change: int | None, saved_floor: int) -> tuple[list[str], int]:
    """What the next start of the app would find. `last_change`: the newest change the child said
    it autosaved; `saved_floor`: the story may not be older than this (a save reported, or seen
    before). Returns the problems and the story file's version (-1: no file yet)."""
    problems = []
    story_file, autosave_file = folder / "story.json", folder / "autosave.json"
    saved = -1
    if story_file.exists():
        data = story_file.read_bytes()
        try:
            saved = version_of(load_story(story_file))
        except Exception as e:      # noqa: BLE001 - any failure to open is the finding
            problems.append(f"story.json does not open: {e!r:.200}")
        else:
            if data != versions.story_bytes(saved):
                problems.append(f"story.json opens as change {saved} but is not that version whole")
            if saved < saved_floor:
                problems.append(f"story.json is change {saved}, older than change {saved_floor} saved before")
    elif saved_floor >= 0:
        problems.append("story.json is gone after a save")
    if autosave_file.exists():
        recovery = find_recovery(autosave_file)
        if recovery is None:
            problems.append(f"the autosave ({autosave_file.stat().st_size} bytes) is not recoverable")
        elif story_bytes(recovery.story) != versions.story_bytes(version_of(recovery.story)):
            problems.append("the autosave is not a whole version of the story")
    elif last_change is not None and saved < last_change:
        problems.append(f"change {last_change} is neither saved (the file has {saved}) nor in the autosave")
    return problems, saved


def run(trials: int, folder: Path, seed: int, max_delay: float) -> dict:
    versions = Versions()
    rng = random.Random(seed)
    result = {"trials": 0, "kills_inside_a_write": 0, "unreported_saves_found": 0, "violations": []}
    next_change, last_change, saved_floor = 0, None, -1
    for trial in range(trials):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                        # the child: never returns
            os.close(read_end)
            try:
                child(folder, versions, next_change, write_end)
            finally:
                os._exit(1)
        os.close(write_end)
        time.sleep(rng.uniform(0, max_delay))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raw = b""
        while chunk := os.read(read_end, 65536):
            raw += chunk
        os.close(read_end)
        events = [struct.unpack_from("<ii", raw, i) for i in range(0, len(raw) - len(raw) % 8, 8)]
        for n, kind in events:
            if kind == AUTOSAVE:
                last_change = n
            else:
                saved_floor = max(saved_floor, n)
        temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
        result["kills_inside_a_write"] += bool(temps)
        for p in temps:                     # what a kill leaves: a temp file, never a damaged story
            p.unlink()
        problems, saved = check(folder, versions, last_change, saved_floor)
        result["violations"] += [f"trial {trial}: {p}" for p in problems]
        result["unreported_saves_found"] += saved > saved_floor
        saved_floor = max(saved_floor, saved)
        if events:
            next_change = events[-1][0] + 1
        result["trials"] += 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--folder", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay-ms", type=float, default=25.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="save-kill-") as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = run(args.trials, folder, args.seed, args.max_delay_ms / 1000)
        result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
