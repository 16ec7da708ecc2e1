"""The fuzzing harness of every file reader (issue 16): mutated seed files in, allowed outcomes out.

- `corpus/`: the committed seeds, one folder per target (written by `make_corpus.py`);
- `mutate.py`: byte-level and structure-aware JSON mutations, driven by hypothesis or `random`;
- `targets.py`: the readers (legacy ggml and GGUF with a forward pass, safetensors, sharded index,
  torch pickles, a Hugging Face folder's config.json through the converter, tokenizer.json,
  stories, the autosave, the settings file, the manifest, the catalog and its hub cache);
- `harness.py`: one case under the rules (loads or the reader's own error; no other exception,
  <= 10 s, <= 64 MiB allocated while reading);
- `__main__.py`: the long run, ``python -m tests.fuzz --minutes N`` (workers in child processes, so a
  crash or a hang is caught and its input kept).
The quick run is `tests/test_fuzz.py`, part of the normal test command.
"""
