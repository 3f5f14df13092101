"""Wire protocols, one module each: ``aa`` (Memori's Advanced Augmentation service) and
``chat`` (OpenAI-compatible chat completions). Each builds requests and parses answers for
its backend, and reads requests and writes answers for the loopback server in
:mod:`memori_nb.testing`, so both sides follow one definition."""
