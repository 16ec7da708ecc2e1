"""API keys for remote servers, kept out of the settings file.

Keys go to the operating system's keyring (Secret Service on Linux, Keychain on macOS,
Credential Locker on Windows) through the `keyring` package when it is installed and has a
usable backend. Without one they are kept in memory for this session only, and `where`
says so, so the GUI can tell the user the key will have to be entered again next time.
Settings store only the server address; the key is looked up by that address.
"""
from __future__ import annotations

SERVICE = "NeoXWriter remote server"


def _system_keyring():
    """The keyring module when it has a real backend, else None."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:   # noqa: BLE001 - a broken keyring configuration means "no keyring"
        return None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        return None
    return keyring


class KeyStore:
    """Remote server API keys by server address: `get`, `set`, `delete`; `persistent` and
    `where` tell whether they survive a restart."""

    def __init__(self, keyring_module="system"):
        """`keyring_module`: "system" to use the keyring package if usable, None for memory only,
        or any object with keyring's get_password/set_password/delete_password (tests)."""
        self._keyring = _system_keyring() if keyring_module == "system" else keyring_module
        self._memory: dict[str, str] = {}
        self.problem = "" if self._keyring else "no system keyring is available (install the 'keyring' package)"

    @property
    def persistent(self) -> bool:
        return self._keyring is not None

    @property
    def where(self) -> str:
        if self._keyring is not None:
            return "the system keyring"
        return f"memory only, for this session: {self.problem}"

    @staticmethod
    def _name(url: str) -> str:
        from app.remote.http import normalise_base_url
        return normalise_base_url(url)

    def get(self, url: str) -> str | None:
        name = self._name(url)
        if name in self._memory:
            return self._memory[name]
        if self._keyring is not None:
            try:
                return self._keyring.get_password(SERVICE, name)
            except Exception as e:   # noqa: BLE001 - a locked or broken keyring: fall back
                self._fall_back(e)
        return None

    def set(self, url: str, key: str) -> None:
        name = self._name(url)
        if not key:
            self.delete(url)
            return
        if self._keyring is not None:
            try:
                self._keyring.set_password(SERVICE, name, key)
                self._memory.pop(name, None)
                return
            except Exception as e:   # noqa: BLE001
                self._fall_back(e)
        self._memory[name] = key

    def delete(self, url: str) -> None:
        name = self._name(url)
        self._memory.pop(name, None)
        if self._keyring is not None:
            try:
                self._keyring.delete_password(SERVICE, name)
            except Exception:   # noqa: BLE001 - nothing stored under that name is fine
                pass

    def _fall_back(self, error: Exception) -> None:
        self._keyring = None
        self.problem = f"the system keyring failed ({type(error).__name__}: {error})"
