"""Remote backends: drive a KoboldCpp, llama.cpp or OpenAI-compatible server like the local engine.

See backend.py for the interface (`detect(url, key)` -> RemoteBackend with models(),
generate(), abort(), tokenize()).
"""
from app.remote.backend import (KoboldCppBackend, LlamaCppBackend, OpenAIBackend, RemoteBackend,
                                detect)
from app.remote.http import RemoteError

__all__ = ["KoboldCppBackend", "LlamaCppBackend", "OpenAIBackend", "RemoteBackend", "RemoteError", "detect"]
