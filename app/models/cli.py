"""`python -m app.models`: the headless model manager.

    list [--json] [--refresh] | download ID | import FILE | verify [ID...] | remove ID | path [ID]
    add-hf REPO [--revision REV] [--type f16|q8_0|q5_1|q4_0] [--json] [--delete-checkpoint]
    add-gguf REPO FILE [--revision REV] [--json]

Exit codes: 0 done, 1 failed (network, checksum, refused file, paused), 2 bad usage
(unknown id, missing file, bad arguments). No Qt is imported here.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from app.models.catalog import CatalogError
from app.models.download import DownloadControl, DownloadError, DownloadStopped
from app.models.hf_checkpoint import OUTPUT_TYPES, default_output_type
from app.models.manager import ModelError, ModelManager, UsageError
from app.models.progress_bar import TerminalProgress
from app.units import free_ram_bytes, human_bytes

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.models", description="Find, download, verify and "
                                     "remove the ggml and GGUF model files NeoX Writer runs.")
    parser.add_argument("--models-dir", type=Path, help="models folder (default: the user data folder's models/)")
    parser.add_argument("--endpoint", help="hub or mirror URL (default: $HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--stall-timeout", type=float, default=30.0, metavar="S",
                        help="seconds without data before a transfer counts as failed (default 30)")
    parser.add_argument("--retries", type=int, default=5, help="retries after network errors (default 5)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="catalog models and what is installed")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--refresh", action="store_true", help="update sizes, hashes and files from the hub first")
    p = sub.add_parser("download", help="download (or resume) a catalog model and its tokenizer")
    p.add_argument("id")
    p.add_argument("--allow-unverified", action="store_true",
                   help="install even when no SHA-256 is known to check against")
    p.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer.json download")
    p = sub.add_parser("add-hf", help="download a GPT-NeoX checkpoint from Hugging Face at a revision and "
                                      "convert it (e.g. EleutherAI/pythia-160m --revision step3000)")
    p.add_argument("repo", metavar="REPO", help="owner/name of a repository whose config.json says GPTNeoXForCausalLM")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default main); Pythia: step0 ... "
                                                      "step143000")
    p.add_argument("--type", choices=OUTPUT_TYPES, default=None,
                   help="output type (default: the most precise one the free RAM runs comfortably)")
    p.add_argument("--json", action="store_true", help="end with one JSON line: id, path, repo, revision, "
                                                       "commit, type, sha256")
    p.add_argument("--delete-checkpoint", action="store_true",
                   help="delete the downloaded checkpoint after converting it (default: keep it)")
    p = sub.add_parser("add-gguf", help="download one GGUF file of a Hugging Face repository, pinned to the commit "
                                        "its revision is now, verified against the tree API's SHA-256 "
                                        "(e.g. mradermacher/pythia-70m-GGUF pythia-70m.Q4_K_M.gguf)")
    p.add_argument("repo", metavar="REPO", help="owner/name of the repository")
    p.add_argument("file", metavar="FILE", help="the .gguf file's path in the repository")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    p.add_argument("--json", action="store_true", help="end with one JSON line: id, path, repo, revision, "
                                                       "commit, type, sha256, size")
    p = sub.add_parser("import", help="add a local ggml .bin or .gguf file after checking it")
    p.add_argument("file", type=Path)
    p.add_argument("--link", action="store_true", help="hard-link instead of copying when possible")
    p = sub.add_parser("verify", help="re-hash installed models")
    p.add_argument("ids", nargs="*", metavar="ID")
    p = sub.add_parser("remove", help="delete an installed model or a partial download")
    p.add_argument("id")
    p = sub.add_parser("path", help="print the models folder, or an installed model's file")
    p.add_argument("id", nargs="?")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manager = ModelManager(args.models_dir, args.endpoint, stall_timeout=args.stall_timeout,
                               retries=args.retries)
    except (CatalogError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for warning in manager.manifest.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        for message in manager.recover():
            print(message, file=sys.stderr)
        return COMMANDS[args.command](manager, args)
    except BrokenPipeError:  # `list | head`: the reader left, nothing more to say
        sys.stdout = None
        return EXIT_OK
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelError, DownloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_list(manager: ModelManager, args) -> int:
    if args.refresh:
        for error in manager.refresh_catalog():
            print(f"warning: catalog refresh: {error}", file=sys.stderr)
    for row in manager.statuses():
        if args.json:
            print(json.dumps(row.to_dict(), sort_keys=True))
            continue
        entry = row.entry
        mark = "installed" if row.installed else (f"partial {human_bytes(row.partial_bytes)}"
                                                  if row.partial_bytes else "")
        if entry is not None and entry.refused and not row.installed:
            mark = "not supported"
        if entry is None:
            size = human_bytes(row.installed.size)
        elif entry.size:
            size = human_bytes(entry.size)
        else:   # a GGUF file's size is the hub's to say; until it has, none is shown
            size = f"~{human_bytes(entry.approx_size)}" if entry.approx_size else "—"
        record = row.installed
        if entry is None and record.commit:      # converted from Hugging Face: its provenance
            about = f"{record.repo}@{record.revision} (commit {record.commit[:12]}, {record.output_type})"
        else:
            about = entry.name if entry else record.source
        print(f"{row.id:40} {size:>10}  {mark:16} {about}")
    return EXIT_OK


def cmd_download(manager: ModelManager, args) -> int:
    manager.entry(args.id)  # unknown id: usage error before any network traffic
    control = DownloadControl()
    bar = TerminalProgress()
    # Ctrl-C pauses: the .part is kept, running the command again resumes
    outcome = run_in_thread(lambda: manager.download(args.id, bar, control, allow_unverified=args.allow_unverified,
                                                     with_tokenizer=not args.no_tokenizer), control.pause)
    bar.finish_line()
    if "error" in outcome:
        return stopped_or_raise(outcome["error"])
    result = outcome["result"]
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    record = result.record
    print(f"installed {record.id}: {manager.manifest.file_path(record)} "
          f"sha256 {record.sha256} (checked against {record.verified_against})")
    return EXIT_OK


def cmd_add_hf(manager: ModelManager, args) -> int:
    from engine.convert import ConversionCancelled, ConversionControl

    control, conversion = DownloadControl(), ConversionControl()
    bar = TerminalProgress()

    chosen: dict = {}

    def work():
        plan = manager.plan_hf(args.repo, args.revision, bar, control)
        chosen["type"] = args.type or default_output_type(plan.n_params, free_ram_bytes())
        print(f"{plan.repo}@{plan.revision} is commit {plan.commit}: {len(plan.weights)} weight file(s), "
              f"{human_bytes(plan.download_bytes)} to fetch, output {chosen['type']}", file=sys.stderr)
        return manager.add_hf(plan.repo, plan.revision, chosen["type"], on_progress=bar, control=control,
                              on_convert=bar.conversion, conversion=conversion,
                              keep_checkpoint=not args.delete_checkpoint, plan=plan)

    def stop():
        control.pause()      # a download keeps its .part, the conversion its journal: run again to resume
        conversion.cancel()

    outcome = run_in_thread(work, stop)
    bar.finish_line()
    if "error" in outcome:
        return stopped_or_raise(outcome["error"], ConversionCancelled)
    result = outcome["result"]
    record = result.record
    where = (f"; checkpoint kept in {result.checkpoint_dir}" if result.checkpoint_dir else "")
    print(f"{'already installed' if result.already_installed else 'installed'} {record.id}: "
          f"{manager.manifest.file_path(record)} sha256 {record.sha256}{where}",
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.to_json(manager.models_dir), sort_keys=True))
    return EXIT_OK


def cmd_add_gguf(manager: ModelManager, args) -> int:
    control = DownloadControl()
    bar = TerminalProgress()

    def work():
        plan = manager.plan_gguf(args.repo, args.file, args.revision)
        print(f"{plan.repo}@{plan.revision} is commit {plan.commit}: {plan.file.path}, {human_bytes(plan.size)}, "
              f"SHA-256 {plan.sha256}", file=sys.stderr)
        return manager.add_gguf(plan.repo, plan.file.path, plan.revision, on_progress=bar, control=control, plan=plan)

    # Ctrl-C pauses: the .part is kept, running the command again resumes
    outcome = run_in_thread(work, control.pause)
    bar.finish_line()
    if "error" in outcome:
        return stopped_or_raise(outcome["error"])
    result = outcome["result"]
    record = result.record
    print(f"{'already installed' if result.already_installed else 'installed'} {record.id}: "
          f"{manager.manifest.file_path(record)} sha256 {record.sha256} (commit {record.commit})",
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.to_json(manager.models_dir), sort_keys=True))
    return EXIT_OK


def stopped_or_raise(exc: BaseException, *stopped: type[BaseException]) -> int:
    """A paused download (or another stop of `stopped`'s kinds) says what was kept and fails;
    anything else goes on up to main(), which reports it."""
    if isinstance(exc, (DownloadStopped, *stopped)):
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    raise exc


def run_in_thread(work, stop) -> dict:
    """Run `work` in a worker thread; Ctrl-C calls `stop` and waits. Returns {"result"} or {"error"}."""
    outcome: dict = {}
    finished = threading.Event()

    def target():
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome["error"] = exc
        finally:
            finished.set()

    # An Event, not Thread.join: a join interrupted by Ctrl-C may return early afterwards.
    threading.Thread(target=target, name="model-manager", daemon=True).start()
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        stop()
        finished.wait()
    return outcome


def cmd_import(manager: ModelManager, args) -> int:
    record = manager.import_file(args.file, link=args.link)
    print(f"imported {record.id}: {manager.manifest.file_path(record)} sha256 {record.sha256} "
          f"({record.verified_against})")
    return EXIT_OK


def cmd_verify(manager: ModelManager, args) -> int:
    results = manager.verify(args.ids)
    if not results:
        print("no models installed")
    for result in results:
        print(f"{'ok' if result.ok else 'FAILED':6} {result.id}: {result.message}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_remove(manager: ModelManager, args) -> int:
    for path in manager.remove(args.id):
        print(f"removed {path}")
    return EXIT_OK


def cmd_path(manager: ModelManager, args) -> int:
    print(manager.installed_path(args.id) if args.id else manager.models_dir)
    return EXIT_OK


COMMANDS = {"list": cmd_list, "download": cmd_download, "add-hf": cmd_add_hf, "add-gguf": cmd_add_gguf,
            "import": cmd_import, "verify": cmd_verify, "remove": cmd_remove, "path": cmd_path}
