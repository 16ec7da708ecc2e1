"""The local API server: KoboldCpp- and OpenAI-compatible endpoints in front of one worker.

    worker = EngineWorker.load("pythia-70m.bin")
    server = ApiServer(worker, ServerConfig(port=5001))
    url = server.start()        # serves in background threads
    ...
    server.stop()

`python -m app.server --model PATH` runs it headless (see cli.py).
"""
from app.server.http import ApiServer, ServerConfig
from app.server.worker import EngineWorker

__all__ = ["ApiServer", "EngineWorker", "ServerConfig"]
