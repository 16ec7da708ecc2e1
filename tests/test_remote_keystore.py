"""API keys: kept in a keyring when one works, else in memory only (and said so); never in
the settings files."""
from __future__ import annotations

import pytest

from app.keystore import SERVICE, KeyStore


class DictKeyring:
    """keyring's three calls over a dict."""

    def __init__(self, broken=False):
        self.data = {}
        self.broken = broken

    def get_password(self, service, name):
        if self.broken:
            raise RuntimeError("keyring is locked")
        return self.data.get((service, name))

    def set_password(self, service, name, value):
        if self.broken:
            raise RuntimeError("keyring is locked")
        self.data[(service, name)] = value

    def delete_password(self, service, name):
        if (service, name) not in self.data:
            raise KeyError(name)
        del self.data[(service, name)]


def test_keys_go_to_the_keyring_by_server_address():
    ring = DictKeyring()
    store = KeyStore(ring)
    assert store.persistent and store.where == "the system keyring"
    store.set("localhost:5001/v1", "abc")
    assert ring.data == {(SERVICE, "http://localhost:5001"): "abc"}
    assert KeyStore(ring).get("http://localhost:5001/") == "abc"       # a new session finds it
    store.delete("http://localhost:5001")
    assert ring.data == {} and store.get("localhost:5001") is None
    store.delete("http://localhost:5001")                                # deleting twice is fine


def test_without_a_keyring_keys_live_in_memory_only():
    store = KeyStore(None)
    assert not store.persistent and store.where.startswith("memory only, for this session")
    store.set("http://h:8080", "k")
    assert store.get("h:8080") == "k"
    assert KeyStore(None).get("h:8080") is None
    store.set("http://h:8080", "")
    assert store.get("h:8080") is None


def test_a_failing_keyring_falls_back_to_memory_and_says_why():
    store = KeyStore(DictKeyring(broken=True))
    store.set("http://h", "k")
    assert store.get("http://h") == "k" and not store.persistent
    assert "keyring is locked" in store.where


def test_the_system_keyring_choice_never_writes_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path))
    store = KeyStore()            # the real keyring if installed and usable, else memory
    if store.persistent:
        pytest.skip("a real system keyring is present; not writing to it from tests")
    store.set("http://h", "secret-value")
    assert store.get("http://h") == "secret-value"
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
