"""The download engine against a real local HTTP server: resume, verification, faults, stop."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import threading

import pytest

from app.models.connection import HttpClient, RedirectRefused
from app.models.download import (ChecksumMismatch, DiskFullError, DownloadControl, DownloadError, DownloadStopped,
                                 Downloader, Expected, part_path, sidecar_path)
from app.models.hub import Hub
from http_fixture_server import Fault, HubFixture

REPO, REV, PATH = "test/models", "main", "folder/model.bin"
DATA = hashlib.sha256(b"seed").digest() * 40_000   # 1.28 MB, not repetitive at chunk boundaries
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def hub():
    with HubFixture() as server:
        server.add_file(REPO, REV, PATH, DATA)
        yield server


def make(hub, **kw):
    client = HttpClient(hub.endpoint)
    options = dict(stall_timeout=1.0, retries=3, backoff=0.01)
    options.update(kw)
    return Hub(client), Downloader(client, **options)


def fetch(hub, dest, expected=None, **kw):
    h, d = make(hub)
    events = []
    sha = d.download(h.resolve_url(REPO, REV, PATH), dest, expected or Expected(len(DATA), SHA), events.append, **kw)
    return sha, events


def test_full_download_follows_the_resolve_redirect_and_verifies(hub, tmp_path):
    dest = tmp_path / "model.bin"
    sha, events = fetch(hub, dest)
    assert sha == SHA and dest.read_bytes() == DATA
    assert not part_path(dest).exists() and not sidecar_path(dest).exists()
    assert [r[1] for r in hub.requests] == [f"/{REPO}/resolve/{REV}/{PATH}", f"/cdn/{SHA}"]
    downloading = [e for e in events if e.phase == "downloading"]
    assert downloading[-1].done == len(DATA) and downloading[-1].total == len(DATA)
    assert events[-1].phase == "done" and all(e.file == "model.bin" for e in events)


def test_hub_metadata_from_head_and_tree(hub):
    h, _ = make(hub)
    head = h.head(REPO, REV, PATH)
    assert (head.size, head.sha256) == (len(DATA), SHA)
    tree = h.tree(REPO, REV)
    assert tree[PATH].sha256 == SHA and tree[PATH].size == len(DATA)
    assert "folder" not in tree   # directories are not files


def test_dropped_connection_resumes_with_range_to_the_right_hash(hub, tmp_path):
    hub.inject(Fault("drop", after=500_000))
    dest = tmp_path / "model.bin"
    sha, events = fetch(hub, dest)
    assert sha == SHA and dest.read_bytes() == DATA
    retry = [e for e in events if e.phase == "retrying"]
    assert len(retry) == 1 and "500000 of 1280000" in retry[0].message
    assert (("GET", f"/cdn/{SHA}", "bytes=500000-")) in hub.requests


def test_a_part_left_by_a_crash_is_rehashed_and_resumed(hub, tmp_path):
    dest = tmp_path / "model.bin"
    hub.inject(Fault("drop", after=300_000))
    h, d = make(hub, retries=0)
    with pytest.raises(DownloadError, match="failed after 1 attempts"):
        d.download(h.resolve_url(REPO, REV, PATH), dest, Expected(len(DATA), SHA))
    assert part_path(dest).stat().st_size == 300_000
    sha, events = fetch(hub, dest)    # a fresh process: the hash is rebuilt from the .part
    assert sha == SHA and dest.read_bytes() == DATA
    assert any(e.phase == "checking" for e in events)
    assert hub.requests[-1] == ("GET", f"/cdn/{SHA}", "bytes=300000-")


def test_wrong_bytes_are_rejected_and_nothing_is_installed(hub, tmp_path):
    hub.inject(Fault("corrupt", after=777_777))
    dest = tmp_path / "model.bin"
    with pytest.raises(ChecksumMismatch, match="does not match.*partial file was deleted"):
        fetch(hub, dest)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_rejected(hub, tmp_path):
    with pytest.raises(ChecksumMismatch, match="serves 1280000 bytes but 1000 were expected"):
        fetch(hub, tmp_path / "model.bin", Expected(1000, SHA))


def test_404_fails_without_retrying(hub, tmp_path):
    h, d = make(hub)
    with pytest.raises(DownloadError, match="HTTP 404"):
        d.download(h.resolve_url(REPO, REV, "missing.bin"), tmp_path / "m.bin", Expected(None, SHA))
    assert len(hub.requests) == 1


def test_server_errors_are_retried_with_backoff(hub, tmp_path):
    hub.inject(Fault("status", status=503, times=2))
    sha, events = fetch(hub, tmp_path / "model.bin")
    assert sha == SHA and sum(e.phase == "retrying" for e in events) == 2


def test_416_on_a_stale_part_restarts_cleanly(hub, tmp_path):
    dest = tmp_path / "model.bin"
    # a .part from an earlier, longer version of the file with the same URL and no size known
    part_path(dest).write_bytes(b"x" * (len(DATA) + 10))
    sidecar_path(dest).write_text('{"url": "%s", "size": null, "sha256": null, "meta": {}, "etag": "\\"%s\\""}'
                                  % (Hub(HttpClient(hub.endpoint)).resolve_url(REPO, REV, PATH), SHA))
    sha, events = fetch(hub, dest, Expected(None, None))
    assert sha == SHA and dest.read_bytes() == DATA
    assert any("HTTP 416" in e.message for e in events)


def test_a_server_ignoring_range_restarts_from_zero(hub, tmp_path):
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(DATA[:400_000])
    sidecar_path(dest).write_text('{"url": "x", "size": %d, "sha256": "%s", "meta": {}}' % (len(DATA), SHA))
    hub.inject(Fault("ignore_range"))
    sha, events = fetch(hub, dest)
    assert sha == SHA and dest.read_bytes() == DATA
    assert any("ignored the resume request" in e.message for e in events)


def test_a_part_of_another_file_version_is_not_resumed(hub, tmp_path):
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(b"old version bytes")
    sidecar_path(dest).write_text('{"url": "x", "size": 17, "sha256": "%s", "meta": {}}' % ("0" * 64))
    sha, _ = fetch(hub, dest)
    assert sha == SHA and hub.requests[-1][2] is None   # no Range header: started over


def interrupted_download(hub, dest, after: int, expected: Expected):
    """A download that died after `after` bytes and left its .part and sidecar (as a killed process does)."""
    hub.inject(Fault("drop", after=after))
    h, d = make(hub, retries=0)
    with pytest.raises(DownloadError, match="failed after 1 attempts"):
        d.download(h.resolve_url(REPO, REV, PATH), dest, expected)
    assert part_path(dest).stat().st_size == after


def test_a_resume_sends_if_range_with_the_etag_the_part_came_with(hub, tmp_path):
    dest = tmp_path / "model.bin"
    interrupted_download(hub, dest, 300_000, Expected(len(DATA), SHA))
    assert json.loads(sidecar_path(dest).read_text())["etag"] == f'"{SHA}"'
    sha, _ = fetch(hub, dest)
    assert sha == SHA and dest.read_bytes() == DATA
    assert hub.requests[-1] == ("GET", f"/cdn/{SHA}", "bytes=300000-") and hub.if_ranges[-1] == f'"{SHA}"'


# a new version of the file with the same size, so that a splice would not show in the length
NEW_DATA = hashlib.sha256(b"another seed").digest() * 40_000
NEW_SHA = hashlib.sha256(NEW_DATA).hexdigest()


@pytest.mark.parametrize("server", ["honours If-Range", "ignores If-Range"])
def test_a_file_changed_on_the_server_restarts_from_byte_0(hub, tmp_path, server):
    dest = tmp_path / "model.bin"
    interrupted_download(hub, dest, 300_000, Expected(None, None))   # nothing known: only the ETag can tell
    hub.add_file(REPO, REV, PATH, NEW_DATA)                           # a new commit replaces the file
    if server == "ignores If-Range":
        hub.inject(Fault("ignore_if_range"))
    sha, events = fetch(hub, dest, Expected(None, None))
    assert sha == NEW_SHA and dest.read_bytes() == NEW_DATA            # not 300,000 old bytes + the new rest
    assert ("GET", f"/cdn/{NEW_SHA}", "bytes=300000-") in hub.requests
    assert f'"{SHA}"' in hub.if_ranges
    if server == "ignores If-Range":     # its 206 carried the new ETag: the part was thrown away
        assert hub.requests[-1] == ("GET", f"/cdn/{NEW_SHA}", None)
    assert any("changed" in e.message for e in events if e.phase == "retrying")


def test_a_part_of_unknown_version_is_not_resumed_without_a_checksum(hub, tmp_path):
    dest = tmp_path / "model.bin"
    url = Hub(HttpClient(hub.endpoint)).resolve_url(REPO, REV, PATH)
    part_path(dest).write_bytes(NEW_DATA[:300_000])
    sidecar_path(dest).write_text(json.dumps({"url": url, "size": None, "sha256": None, "meta": {}}))  # no ETag
    sha, _ = fetch(hub, dest, Expected(None, None))
    assert sha == SHA and dest.read_bytes() == DATA
    assert all(rng is None for _, _, rng in hub.requests)


def test_a_stall_is_an_error_that_is_retried(hub, tmp_path):
    hub.inject(Fault("stall", after=200_000, seconds=5))
    sha, events = fetch(hub, tmp_path / "model.bin")
    assert sha == SHA
    assert any("stalled: no data for 1 s" in e.message for e in events)


def test_a_stall_that_persists_fails_and_keeps_the_part(hub, tmp_path):
    hub.inject(Fault("stall", after=200_000, seconds=5, times=10))
    h, d = make(hub, retries=1)
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="stalled: no data for 1 s.*kept in model.bin.part"):
        d.download(h.resolve_url(REPO, REV, PATH), dest, Expected(len(DATA), SHA))
    assert part_path(dest).stat().st_size == 400_000   # each of the 2 attempts added 200 kB


def test_not_enough_free_space_is_refused_before_starting(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(Downloader, "free_space", staticmethod(lambda folder: 1_000_000))
    with pytest.raises(DiskFullError, match="not enough free space"):
        fetch(hub, tmp_path / "model.bin")
    assert hub.requests == [] and list(tmp_path.iterdir()) == []


class _FullDisk:
    """A file object that accepts `room` bytes and then fails like a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_while_writing_is_reported_and_resumable(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(Downloader, "open_part", staticmethod(lambda path, mode: _FullDisk(open(path, mode), 600_000)))
    dest = tmp_path / "model.bin"
    with pytest.raises(DiskFullError, match="disk full while writing .*model.bin.part"):
        fetch(hub, dest)
    assert 0 < part_path(dest).stat().st_size <= 600_000
    monkeypatch.undo()
    sha, _ = fetch(hub, dest)
    assert sha == SHA and dest.read_bytes() == DATA


def _stop_when(control, action, at_bytes):
    def on_progress(p):
        if p.phase == "downloading" and p.done >= at_bytes:
            getattr(control, action)()
    return on_progress


def test_pause_keeps_the_part_and_a_later_call_resumes(tmp_path):
    with HubFixture(rate=2_000_000) as hub:
        hub.add_file(REPO, REV, PATH, DATA)
        h, d = make(hub)
        dest = tmp_path / "model.bin"
        control = DownloadControl()
        with pytest.raises(DownloadStopped, match="paused") as info:
            d.download(h.resolve_url(REPO, REV, PATH), dest, Expected(len(DATA), SHA),
                       _stop_when(control, "pause", 300_000), control)
        assert info.value.kept_partial
        kept = part_path(dest).stat().st_size
        assert 300_000 <= kept < len(DATA)
        assert d.download(h.resolve_url(REPO, REV, PATH), dest, Expected(len(DATA), SHA)) == SHA
        assert hub.requests[-1][2] == f"bytes={kept}-"


def test_cancel_from_another_thread_interrupts_a_stalled_read_and_deletes_the_part(hub, tmp_path):
    hub.inject(Fault("stall", after=100_000, seconds=30))
    h, d = make(hub, stall_timeout=30.0)
    dest = tmp_path / "model.bin"
    control = DownloadControl()
    timer = threading.Timer(0.5, control.cancel)
    timer.start()
    with pytest.raises(DownloadStopped, match="cancelled") as info:
        d.download(h.resolve_url(REPO, REV, PATH), dest, Expected(len(DATA), SHA), None, control)
    timer.join()
    assert not info.value.kept_partial and list(tmp_path.iterdir()) == []


def test_redirects_only_to_https_or_the_endpoint_host(hub, tmp_path):
    hub.inject(Fault("redirect", match="/resolve/", location="http://example.invalid/cdn/file"))
    with pytest.raises(DownloadError, match="refusing http://example.invalid/cdn/file"):
        fetch(hub, tmp_path / "model.bin")
    client = HttpClient("http://127.0.0.1:9")
    assert client.allowed("https://cdn.example.org/x") and client.allowed("http://127.0.0.1:9/y")
    assert not client.allowed("http://127.0.0.1:10/y") and not client.allowed("ftp://127.0.0.1:9/y")
    with pytest.raises(RedirectRefused):
        client.open("GET", "http://example.invalid/")
