"""The headless server command: `python -m app.server --model PATH ...` end to end."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from test_server_support import make_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["-m", "app.server"], ["-m", "app", "--server"]])
def test_serves_until_interrupted(tmp_path, command):
    model = make_model(tmp_path)
    proc = subprocess.Popen([sys.executable, *command, "--model", str(model), "--port", "0",
                             "--backend", "reference", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Serving tiny (context 128) on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].strip()
        with urllib.request.urlopen(url + "/api/extra/version", timeout=30) as r:
            assert json.load(r)["result"] == "KoboldCpp"
        req = urllib.request.Request(url + "/api/v1/generate", data=json.dumps({"prompt": "Hi", "max_length": 3}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert isinstance(json.load(r)["results"][0]["text"], str)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_refuses_other_interfaces_without_a_key_and_bad_models(tmp_path):
    model = make_model(tmp_path)
    r = subprocess.run([sys.executable, "-m", "app.server", "--model", str(model), "--host", "0.0.0.0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "an API key is required" in r.stderr
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "app.server", "--model", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and str(bad) in r.stderr
