"""`python -m app.models` end to end: a subprocess against the local fixture hub, in a temporary home."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from http_fixture_server import Fault, HubFixture
from modelgen import write_random_model

ROOT = Path(__file__).resolve().parents[1]
REPO = "Crataco/Pythia-Deduped-Series-GGML"
FILE = "ggmlv3-pythia-70m-deduped-q4_0.bin"
MODEL_ID = "pythia-70m-deduped-q4_0"
TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}).encode()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "m.bin"
    write_random_model(path, {"n_vocab": 512, "n_embd": 128, "n_layer": 2}, ftype="f32")
    return path.read_bytes()


@pytest.fixture
def hub(model_bytes):
    with HubFixture() as server:
        server.add_file(REPO, "main", FILE, model_bytes)
        server.add_file("EleutherAI/pythia-70m-deduped", "main", "tokenizer.json", TOKENIZER, lfs=False)
        yield server


def cli(home, hub, *args):
    env = dict(os.environ, NEOX_WRITER_HOME=str(home), HF_ENDPOINT=hub.endpoint, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "app.models", "--stall-timeout", "1", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def listing(home, hub):
    done = cli(home, hub, "list", "--json")
    assert done.returncode == 0, done.stderr
    return {row["id"]: row for row in map(json.loads, done.stdout.splitlines())}


def test_cli_session_download_with_a_drop_verify_remove(hub, tmp_path, model_bytes):
    home = tmp_path / "home"
    rows = listing(home, hub)
    assert {"id", "repo", "revision", "path", "installed"} <= set(rows[MODEL_ID])
    assert rows[MODEL_ID]["installed"] is False and rows[MODEL_ID]["repo"] == REPO

    hub.inject(Fault("drop", after=len(model_bytes) // 3))
    done = cli(home, hub, "download", MODEL_ID)
    assert done.returncode == 0, done.stderr
    assert f"connection closed after {len(model_bytes) // 3} of {len(model_bytes)} bytes" in done.stderr
    assert "retry 1/5" in done.stderr
    assert ("GET", f"/cdn/{hashlib.sha256(model_bytes).hexdigest()}", f"bytes={len(model_bytes) // 3}-") in hub.requests
    assert f"installed {MODEL_ID}" in done.stdout and hashlib.sha256(model_bytes).hexdigest() in done.stdout

    row = listing(home, hub)[MODEL_ID]
    assert row["installed"] is True and Path(row["file"]).read_bytes() == model_bytes
    assert Path(row["tokenizer_file"]).read_bytes() == TOKENIZER
    assert Path(row["file"]).parent == home / "data" / "models"

    path = cli(home, hub, "path", MODEL_ID)
    assert path.returncode == 0 and path.stdout.strip() == row["file"]
    assert cli(home, hub, "path").stdout.strip() == str(home / "data" / "models")

    verify = cli(home, hub, "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok")
    Path(row["file"]).write_bytes(model_bytes[:-1] + b"\x01")
    verify = cli(home, hub, "verify", MODEL_ID)
    assert verify.returncode == 1 and "FAILED" in verify.stdout

    removed = cli(home, hub, "remove", MODEL_ID)
    assert removed.returncode == 0 and not Path(row["file"]).exists()
    assert listing(home, hub)[MODEL_ID]["installed"] is False


def test_cli_resumes_in_a_new_process_after_a_failed_run(hub, tmp_path, model_bytes):
    home = tmp_path / "home"
    hub.inject(Fault("drop", after=5000, times=2))
    failed = cli(home, hub, "--retries", "1", "download", MODEL_ID)
    assert failed.returncode == 1 and "failed after 2 attempts" in failed.stderr
    assert listing(home, hub)[MODEL_ID]["partial_bytes"] == 10000
    done = cli(home, hub, "download", MODEL_ID)
    assert done.returncode == 0, done.stderr
    assert hub.requests[-3][2] == "bytes=10000-"   # the CDN GET, before the tokenizer's HEAD and GET


def test_cli_exit_codes_and_import(hub, tmp_path, model_bytes):
    home = tmp_path / "home"
    assert cli(home, hub, "download", "no-such-model").returncode == 2
    assert cli(home, hub, "frobnicate").returncode == 2
    assert cli(home, hub, "import", str(tmp_path / "absent.bin")).returncode == 2
    assert cli(home, hub, "remove", MODEL_ID).returncode == 2
    missing = cli(home, hub, "download", "pythia-160m-deduped-q4_0")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr

    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(model_bytes[: len(model_bytes) - 100])
    refused = cli(home, hub, "import", str(corrupt))
    assert refused.returncode == 1 and "refused to import" in refused.stderr
    good = tmp_path / "mine.bin"
    good.write_bytes(model_bytes)
    imported = cli(home, hub, "import", str(good))
    assert imported.returncode == 0 and "imported local-mine" in imported.stdout
    row = listing(home, hub)["local-mine"]
    assert row["installed"] is True and row["repo"] is None and row["origin"] == "import"


def test_cli_refresh_reads_the_tree_api(hub, tmp_path, model_bytes):
    home = tmp_path / "home"
    done = cli(home, hub, "list", "--json", "--refresh")
    assert done.returncode == 0
    rows = {row["id"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows[MODEL_ID]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert rows[MODEL_ID]["size"] == len(model_bytes)
    assert "warning: catalog refresh" in done.stderr   # the other revisions are not on this server
    assert (home / "cache" / "catalog-hub.json").exists()


def test_cli_does_not_import_qt(tmp_path):
    code = ("import sys; from app.models.cli import main; rc = main(['path']); "
            "sys.exit(3 if any(m.startswith('PySide6') for m in sys.modules) else rc)")
    env = dict(os.environ, NEOX_WRITER_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    env.pop("HF_ENDPOINT", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_cli_ctrl_c_pauses_and_the_next_run_resumes(model_bytes, tmp_path):
    import signal
    import time
    home = tmp_path / "home"
    with HubFixture(rate=500_000) as hub:
        hub.add_file(REPO, "main", FILE, model_bytes)
        env = dict(os.environ, NEOX_WRITER_HOME=str(home), HF_ENDPOINT=hub.endpoint, PYTHONPATH=str(ROOT))
        # As from a terminal: a run started in the background (CI under nohup, `cmd &`) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
        proc = subprocess.Popen([sys.executable, "-m", "app.models", "download", MODEL_ID, "--no-tokenizer"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        part = home / "data" / "models" / (FILE + ".part")
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and "paused" in err, err
        kept = part.stat().st_size
        assert 0 < kept < len(model_bytes)
        hub.rate = None
        done = cli(home, hub, "download", MODEL_ID, "--no-tokenizer")
        assert done.returncode == 0, done.stderr
        assert hub.requests[-1][2] == f"bytes={kept}-"
