"""Conversations shaped like real chat history: seeded, reproducible, for benchmarks.

The sizes follow what real exports look like (RESEARCH.md section 4: 1,000 conversations had a
median of 18 messages and 6.8k characters, a p99 of 590 messages and 240k characters, six over
800k characters): many short conversations, a heavy tail of long ones, a few with documents or
code pastes of hundreds of KB. Messages alternate user/assistant (a system message now and then),
carry ISO timestamps that increase within a conversation, and mix in emoji, accents, CJK and
curly quotes (never a lone surrogate). User messages state first-person facts the offline
``local`` extractor recognises ("I live in Porto.", "I have a dog named Rex.") drawn from a pool
per entity, so an entity's facts repeat across its conversations as real ones do, mixed with
filler text that states nothing.

From another benchmark (``python benchmarks/X.py`` puts benchmarks/ on sys.path)::

    from realistic import generate_conversations, write_seed_file, describe
    seeds = generate_conversations(1000, seed=0, scale=1.0)  # [{"entity_id", "conversations"}]
    describe(seeds)                                          # prints the size distribution

    python benchmarks/realistic.py [--n 1000] [--seed 0] [--scale 1.0] [--entities N]
                                   [--write seed.json] [--facts]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["TARGETS", "describe", "generate_conversations", "write_seed_file"]

#: What the generator aims for at scale 1 (per conversation; from RESEARCH.md section 4).
TARGETS = {"median_messages": 18, "p99_messages": 590, "median_chars": 6_800,
           "p99_chars": 240_000, "over_800k_per_1000": 6}

# -- the size model --------------------------------------------------------------------------
# p99 is the nearest-rank one (the 990th of 1,000: the 98.95th percentile, z = 2.31).
# Messages per conversation: log-normal, median 18, p99 590 -> sigma = ln(590/18) / 2.31.
# Characters: log-normal for all but HUGE_SHARE of the conversations, median 6.8k; those huge
# ones (whole documents, logs, code bases pasted in) take 0.85-1.3M characters. With 0.6% huge,
# the overall p99 is the base's 99.5th percentile: sigma = ln(240k/6.8k) / 2.58 = 1.38.
# Characters and messages are correlated (a Gaussian copula, rho 0.9): long chats are long in
# both, and long chats have somewhat shorter messages on average, as real ones do.
# Both are drawn stratified (one draw per 1/n quantile, shuffled), so median and p99 hit their
# targets at any n instead of wobbling with the sample.
MEDIAN_MESSAGES = 18
SIGMA_MESSAGES = math.log(590 / 18) / 2.31
MEDIAN_CHARS = 6_800
SIGMA_CHARS = 1.38
CORRELATION = 0.9
HUGE_SHARE = 0.006
HUGE_CHARS = (850_000, 1_300_000)
MAX_MESSAGES = 6_000
DEFAULT_CONVERSATIONS_PER_ENTITY = 20

SYSTEM_FIRST = 0.05          # conversations opening with a system message
SYSTEM_LATER = 0.003         # any later position turning into a system message
ACK_SHARE = 0.10             # user messages that are a short acknowledgement
PASTE_SHARE = 0.012          # messages carrying a pasted document or code (x30 the length)
CODE_SHARE = 0.15            # assistant messages with a code block
FACT_FIRST = 0.7             # chance the first user message states a fact
FACT_LATER = 0.2             # ... any later one
ONE_OFF_SHARE = 0.2          # stated facts that come from outside the entity's pool

_SPAN_START = 1_672_531_200  # 2023-01-01T00:00:00Z
_SPAN_SECONDS = 3 * 365 * 86_400

# -- text ------------------------------------------------------------------------------------
# Filler vocabulary. No "i", "my", "me", "im", "ive": the local extractor starts a fact only at
# those, so filler states nothing and every fact is one we put there on purpose.
_WORDS = """the a an and or but so of to in on at for with from by about as into over after
before under between through during without again further then once here there when where why
how all any both each few more most other some such only own same than too very can will just
should now this that these those is are was were be been being have has had do does did would
could it its they them their we our you your he she his her what which who whom project data
table query model request response server client file line error value result number list
string function class module package version release build test case step plan idea draft
note summary report budget schedule meeting email message call trip flight hotel train ticket
recipe dinner lunch breakfast coffee tea garden weather rain snow morning evening weekend week
month year today tomorrow yesterday time place city street house room kitchen window door book
chapter page story song movie game team player score price order invoice account password
network cache queue thread process memory disk database index column row key field record batch
chunk limit retry timeout latency throughput benchmark profile graph chart sample average median
quick slow large small long short new old good better best simple complex clear useful likely
possible different important easy hard early late free open close start finish check update
write read send receive run stop keep move turn show find give take make use try need want
help explain compare describe suggest consider review improve fix change add remove include
follow return create delete replace convert parse format split merge sort filter group count
""".split()
_ODD = ["café", "naïve", "façade", "jalapeño", "résumé", "über", "smörgåsbord", "crème brûlée",
        "Zürich", "São Paulo", "Kraków", "Ångström", "niño", "straße", "東京", "寿司", "ありがとう",
        "你好", "한국어", "Ωmega", "½", "€42", "£7", "±3", "→", "—", "…", "😀", "🚀", "🙏", "👍🏽",
        "🇵🇹", "❤️", "🤔", "👩‍💻", "✅", "“quoted”", "‘single’", "it’s", "don’t", "«guillemets»",
        "naïveté", "Ελληνικά", "русский", "עברית", "العربية", "ﬁligree", "Ǆ"]
_ACKS = ["ok", "k", "thanks!", "👍", "yes", "no", "go on", "continue", "perfect, thanks 🙏",
         "hmm", "what?", "merci", "got it", "sure", "nice", "do it", "ja", "はい", "ok 👌",
         "that works", "try again", "shorter please", "and then?", "cool", "¿por qué?"]
_SYSTEM = ["You are a helpful assistant.", "You are ChatGPT, a large language model.",
           "Answer concisely. Use metric units.",
           "The user prefers short answers with examples.",
           "Knowledge cutoff: 2024-06. Current date: 2025-01-15."]
_CODE_TEMPLATES = [
    'def {f}({a}, limit=10):\n    """Return the first {a} that pass the check."""\n'
    '    result = []\n    for idx, item in enumerate({a}):\n        if idx >= limit:\n'
    '            break\n        if item.{g}():\n            result.append(item)\n'
    '    return result\n\n',
    "SELECT {a}.id, count(*) AS n\nFROM {a}\nJOIN {b} ON {b}.{a}_id = {a}.id\n"
    "WHERE {a}.created_at > now() - interval '7 days'\nGROUP BY 1\nORDER BY n DESC;\n\n",
    '{{"{a}": [{n}, {n2}], "{b}": {{"enabled": true, "name": "{f}"}}, "note": "café ✅"}}\n',
    "2025-01-{d:02d}T10:{n2:02d}:00Z INFO {f} handled {n} {a} in {n2} ms\n"
    "2025-01-{d:02d}T10:{n2:02d}:01Z WARN {g} retry {n2}/3 after timeout\n",
    "class {F}:\n    def __init__(self, {a}):\n        self.{a} = {a}\n\n"
    "    def {g}(self):\n        return len(self.{a}) > {n}\n\n",
    "const {f} = async ({a}) => {{\n  const res = await fetch(`/api/{b}/${{{a}}}`);\n"
    "  return res.json();\n}};\n\n",
]
_IDENTS = ["users", "orders", "items", "events", "rows", "tasks", "files", "pages", "jobs",
           "sessions", "records", "values"]
_VERBS = ["load_batch", "parse_rows", "merge_items", "retry_jobs", "fetch_pages", "is_valid",
          "is_ready", "has_data", "flush_cache", "split_text"]

# -- facts -----------------------------------------------------------------------------------
_CITIES = ["Lisbon", "Porto", "Oslo", "Kyoto", "Austin", "Lima", "Nairobi", "Montreal", "Hanoi",
           "Berlin", "Cape Town", "São Paulo", "Zürich", "Kraków", "Reykjavík", "Málaga",
           "Seattle", "Denver", "Accra", "Bogotá", "Chennai", "Osaka", "Melbourne", "Dublin",
           "Edinburgh", "Tallinn", "Valparaíso", "Göteborg", "Tromsø", "Québec City"]
_COMPANIES = ["Acme", "Globex", "Initech", "Umbrella Labs", "Hooli", "Vandelay Industries",
              "Wayne Analytics", "Soylent Foods", "Tyrell Systems", "Nakatomi Trading",
              "Müller und Söhne", "Stark Logistics", "Pied Piper", "Cyberdyne", "Massive Dynamic",
              "Oscorp", "Gringotts Bank", "Monsters Inc", "Wonka Industries", "Aperture Science"]
_JOBS = ["data engineer", "nurse", "teacher", "pilot", "chef", "lawyer", "barista",
         "software developer", "architect", "pharmacist", "electrician", "photographer",
         "translator", "librarian", "veterinarian", "product manager", "accountant"]
_PETS = ["dog", "cat", "parrot", "rabbit", "hamster", "turtle"]
_NAMES = ["Rex", "Biscuit", "Mochi", "Luna", "Miso", "Pixel", "Olive", "Bartholomew", "Kiwi",
          "Nacho", "Zoë", "Renée", "Tomás", "Aiko", "Priya", "Jun", "Ana", "Li", "Søren", "Chloé",
          "Mateo", "Ingrid", "Kwame", "Fatima", "Yuki", "Élodie", "Björn", "Nadia", "Oskar",
          "Amara", "Dmitri", "Lucía", "Hiroshi", "Sanjay", "Freya", "Emeka", "Chiara", "Noor",
          "Rafael", "Astrid", "Kofi", "Mei", "Jonas", "Leila", "Pablo", "Sakura", "Ines",
          "Tariq", "Greta", "Wen", "Olu", "Marta", "Ravi", "Hana"]
_RELATIVES = ["sister", "brother", "wife", "husband", "partner", "son", "daughter", "mom",
              "dad", "best friend", "roommate", "boss"]
_LIKES = ["hiking", "surfing", "ramen", "jazz", "board games", "sushi", "crossword puzzles",
          "sourdough baking", "trail running", "K-dramas", "Studio Ghibli films", "matcha",
          "chess", "cycling", "photography", "kayaking", "knitting", "salsa dancing",
          "bird watching", "craft beer", "pho", "tacos al pastor", "crème brûlée",
          "Murakami novels", "rock climbing", "yoga", "gardening", "podcasts about history",
          "vinyl records", "pottery", "sci-fi novels", "bouldering", "Formula 1", "opera",
          "Ethiopian food", "cold brew coffee", "pastéis de nata", "dim sum", "camping"]
_DISLIKES = ["cilantro", "olives", "long meetings", "horror movies", "humid weather",
             "country music", "public speaking", "spicy food", "early mornings", "traffic"]
_LEARNING = ["Japanese", "Rust", "the guitar", "Portuguese", "calculus", "Mandarin",
             "machine learning", "woodworking", "French", "the piano", "SQL", "sign language"]
_PLANS = ["visit Kyoto next spring", "run a marathon", "adopt a cat", "learn to sail",
          "renovate the kitchen", "switch careers", "start a podcast", "hike the Camino",
          "buy a house", "visit Iceland", "go back to school", "write a novel"]
_OWNED = ["Kindle", "Tesla Model 3", "standing desk", "espresso machine", "road bike",
          "mechanical keyboard", "drone", "Vespa", "sailboat", "3D printer", "Nintendo Switch"]
_DIETS = ["vegetarian", "vegan", "pescatarian", "gluten-free"]
_ALLERGIES = ["peanuts", "shellfish", "pollen", "penicillin", "cats", "dust mites"]
_ADJECTIVES = ["vintage", "Italian", "homemade", "Korean", "tiny", "electric", "Brazilian",
               "handmade", "Nordic", "spicy", "retro", "Japanese", "Mexican", "wooden",
               "Moroccan", "Scandinavian", "Peruvian", "classic", "experimental", "Greek",
               "Georgian", "Vietnamese", "minimalist", "baroque", "Ethiopian", "Turkish",
               "second-hand", "miniature", "Portuguese", "Icelandic", "Andalusian", "Cajun",
               "Bavarian", "Sicilian", "Hawaiian", "Tibetan", "Basque", "Lebanese", "Filipino",
               "Polish"]
_NOUNS = ["cars", "board games", "bread", "horror films", "noodles", "synthesizers", "cameras",
          "furniture", "poetry", "comics", "guitars", "pastries", "puzzles", "watches", "tea",
          "jazz", "architecture", "curries", "sneakers", "maps", "ceramics", "cheese",
          "documentaries", "fountain pens", "stews", "kites", "lamps", "textiles", "soups",
          "dumplings", "chairs", "motorcycles", "operas", "rugs", "knives", "novels", "tiles",
          "boats", "radios", "postcards", "posters", "candles", "sandwiches", "festivals",
          "murals", "coins", "stamps", "bicycles", "typewriters", "cocktails", "folk songs",
          "sweaters", "hats", "teapots", "gardens", "trains", "clocks", "mosaics", "pickles",
          "salads"]
_SURNAMES = ["Keller", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Novak", "Rossi",
             "Ferreira", "Kowalski", "Nguyen", "Schmidt", "Oyelaran", "Castillo", "Park",
             "Andersen", "Dubois", "Ivanova", "Mensah", "O'Brien", "Sato", "Costa", "Weber",
             "Rahman", "Jansen", "Petrov", "Alvarez", "Cohen", "Björk", "Yilmaz"]
_COMPANY_KINDS = ["Logistics", "Analytics", "Bakery", "Architects", "Dental", "Robotics",
                  "Consulting", "Media", "Pharma", "Brewing", "Software", "Insurance"]

# Each kind: how many the pool gets (low, high), the phrasings, and what fills them.
_POOL_KINDS: list[tuple[str, tuple[int, int], list[str], Callable[[random.Random], dict]]] = [
    ("lives_in", (1, 1), ["I live in {x}.", "I live in {x}, for context.",
                          "By the way, I live in {x}."], lambda r: {"x": r.choice(_CITIES)}),
    ("is_from", (1, 1), ["I’m from {x}.", "I'm from {x}, originally."],
     lambda r: {"x": r.choice(_CITIES)}),
    ("works_at", (1, 1), ["I work at {x}.", "I work at {x}, in case that matters."],
     lambda r: {"x": r.choice(_COMPANIES) if r.random() < 0.3
                else f"{r.choice(_SURNAMES)} {r.choice(_COMPANY_KINDS)}"}),
    ("works_as", (1, 1), ["I work as a {x}.", "I work as a {x}, so keep it practical."],
     lambda r: {"x": r.choice(_JOBS)}),
    ("pet", (0, 2), ["I have a {k} named {x}.", "My {k} {x} says hi 🐾."],
     lambda r: {"k": r.choice(_PETS), "x": r.choice(_NAMES)}),
    ("likes", (3, 8), ["I love {x}.", "I really enjoy {x}, honestly.", "I’m a big fan of {x}."],
     lambda r: {"x": r.choice(_LIKES) if r.random() < 0.5
                else f"{r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}"}),
    ("dislikes", (1, 3), ["I hate {x}.", "I can’t stand {x}."],
     lambda r: {"x": r.choice(_DISLIKES)}),
    ("learning", (0, 2), ["I'm learning {x}.", "I’m learning {x}, slowly!"],
     lambda r: {"x": r.choice(_LEARNING)}),
    ("plans", (0, 2), ["I'm planning to {x}.", "I plan to {x}."],
     lambda r: {"x": r.choice(_PLANS) if r.random() < 0.5 else f"visit {r.choice(_CITIES)}"}),
    ("owns", (0, 2), ["I just bought a {x}!", "I own a {x}."],
     lambda r: {"x": f"{r.choice(_ADJECTIVES)} {r.choice(_OWNED)}" if r.random() < 0.5
                else r.choice(_OWNED)}),
    ("family", (0, 3), ["My {k}'s name is {x}.", "My {k} {x} thinks so too."],
     lambda r: {"k": r.choice(_RELATIVES), "x": r.choice(_NAMES)}),
    ("diet", (0, 1), ["I'm {x}.", "I’m {x}, remember."], lambda r: {"x": r.choice(_DIETS)}),
    ("allergy", (0, 1), ["I'm allergic to {x}."], lambda r: {"x": r.choice(_ALLERGIES)}),
    ("name", (1, 1), ["My name is {x}.", "Call me {x}."], lambda r: {"x": r.choice(_NAMES)}),
]
_ONE_OFF = ["I love {a} {n}.", "I just bought a {a} {o}!", "I'm planning to visit {c}.",
            "I’m learning {a} cooking.", "I hate {a} {n}.", "I prefer {a} {n}."]


# -- pre-generated text ------------------------------------------------------------------------

class _Corpus:
    """Long blocks of filler prose and code, sliced on word boundaries."""

    def __init__(self, seed: int, prose_chars: int = 1_000_000, code_chars: int = 300_000):
        rng = random.Random(f"corpus-{seed}")
        self.prose = self._prose(rng, prose_chars)
        self.code = self._code(rng, code_chars)

    @staticmethod
    def _prose(rng: random.Random, size: int) -> str:
        words = rng.choices(_WORDS, k=size // 5)
        odd = rng.sample(range(len(words)), len(words) // 40)
        for i in odd:
            words[i] = rng.choice(_ODD)
        parts: list[str] = []
        i = 0
        while i < len(words):
            n = rng.randint(5, 22)
            sentence = " ".join(words[i:i + n])
            i += n
            parts.append(sentence[:1].upper() + sentence[1:] + rng.choice(".....?!:"))
            parts.append("\n\n" if rng.random() < 0.15 else " ")
        return "".join(parts)

    @staticmethod
    def _code(rng: random.Random, size: int) -> str:
        parts: list[str] = []
        total = 0
        while total < size:
            a, b = rng.sample(_IDENTS, 2)
            f, g = rng.sample(_VERBS, 2)
            block = rng.choice(_CODE_TEMPLATES).format(
                a=a, b=b, f=f, g=g, F="".join(w.title() for w in f.split("_")),
                n=rng.randint(1, 999), n2=rng.randint(1, 59), d=rng.randint(1, 28))
            parts.append(block)
            total += len(block)
        return "".join(parts)

    def take(self, text: str, length: int, rng: random.Random) -> str:
        """About ``length`` characters of ``text`` from a random word boundary."""
        if length <= 0:
            return ""
        if length >= len(text) - 1000:
            text = text * (length // len(text) + 2)
        start = text.find(" ", rng.randrange(len(text) - length)) + 1
        end = start + length
        cut = text.rfind(" ", start, end)
        if cut > start + length // 2:
            end = cut
        return text[start:end].strip()


# -- the generator -----------------------------------------------------------------------------

def _stratified_normals(n: int, rng: random.Random) -> list[float]:
    """n standard-normal draws, one per 1/n quantile, in random order."""
    inv = statistics.NormalDist().inv_cdf
    values = [inv((k + rng.random()) / n) for k in range(n)]
    rng.shuffle(values)
    return values


def _sizes(n: int, rng: random.Random, scale: float) -> list[tuple[int, int]]:
    """(messages, characters) per conversation."""
    z_messages = _stratified_normals(n, rng)
    huge_count = round(n * HUGE_SHARE)
    huge = set(rng.sample(range(n), huge_count))
    base = [i for i in range(n) if i not in huge]
    # Gaussian copula: rank a correlated latent, give it stratified quantiles.
    latent = {i: CORRELATION * z_messages[i] + math.sqrt(1 - CORRELATION ** 2) * rng.gauss(0, 1)
              for i in base}
    quantiles = sorted(_stratified_normals(len(base), rng))
    z_chars = dict(zip(sorted(base, key=latent.__getitem__), quantiles))
    sizes = []
    for i in range(n):
        messages = MEDIAN_MESSAGES * math.exp(SIGMA_MESSAGES * z_messages[i]) * scale
        messages = min(MAX_MESSAGES, max(1, round(messages)))
        if i in huge:
            lo, hi = HUGE_CHARS
            chars = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        else:
            chars = MEDIAN_CHARS * math.exp(SIGMA_CHARS * z_chars[i])
        chars = max(round(chars * scale), 3 * messages)
        sizes.append((messages, chars))
    return sizes


class _Entity:
    """An entity's pool of fact statements, most stated most often (Zipf-like)."""

    def __init__(self, entity_id: str, rng: random.Random) -> None:
        self.entity_id = entity_id
        statements: list[str] = []
        for _kind, (low, high), phrasings, fill in _POOL_KINDS:
            for _ in range(rng.randint(low, high)):
                values = fill(rng)
                # Phrasings of one fact give one fact: the same values, said in several ways.
                statements.append([p.format(**values) for p in phrasings])
        rng.shuffle(statements)
        self.statements = statements
        self.weights = [1 / (rank + 1) ** 0.8 for rank in range(len(statements))]

    def statement(self, rng: random.Random) -> str:
        if rng.random() < ONE_OFF_SHARE:
            template = rng.choice(_ONE_OFF)
            return template.format(a=rng.choice(_ADJECTIVES), n=rng.choice(_NOUNS),
                                   o=rng.choice(_OWNED), c=rng.choice(_CITIES))
        phrasings = rng.choices(self.statements, self.weights)[0]
        return rng.choice(phrasings)


def _roles(count: int, rng: random.Random) -> list[str]:
    roles = []
    turn = 0
    for position in range(count):
        if (position == 0 and count > 1 and rng.random() < SYSTEM_FIRST) or (
                position > 0 and rng.random() < SYSTEM_LATER):
            roles.append("system")
            continue
        roles.append("user" if turn % 2 == 0 else "assistant")
        turn += 1
    return roles


def _conversation(conv_id: str, messages: int, chars: int, start: float, entity: _Entity,
                  corpus: _Corpus, rng: random.Random) -> dict:
    roles = _roles(messages, rng)
    weights = []
    kinds = []     # "ack", "paste", "text"
    for role in roles:
        if role == "user" and rng.random() < ACK_SHARE:
            kinds.append("ack")
            weights.append(0.0)
            continue
        if role == "system":
            kinds.append("text")
            weights.append(0.3 * math.exp(rng.gauss(0, 0.5)))
            continue
        paste = rng.random() < PASTE_SHARE
        kinds.append("paste" if paste else "text")
        w = math.exp(rng.gauss(0, 1.1 if role == "user" else 0.9))
        w *= (1.0 if role == "user" else 3.5) * (30 if paste else 1)
        weights.append(w)
    total_weight = sum(weights) or 1.0
    out = []
    t = start
    first_user = True
    for role, kind, w in zip(roles, kinds, weights):
        length = max(1, round(chars * w / total_weight))
        if kind == "ack":
            content = rng.choice(_ACKS)
        elif role == "system":
            content = rng.choice(_SYSTEM)
            if length > len(content) + 20:
                content += " " + corpus.take(corpus.prose, length - len(content) - 1, rng)
        elif role == "user":
            said = ""
            if rng.random() < (FACT_FIRST if first_user else FACT_LATER):
                said = " ".join(entity.statement(rng)
                                for _ in range(1 + (rng.random() < 0.3)))
            if kind == "paste":
                block = corpus.code if rng.random() < 0.5 else corpus.prose
                filler = "Here it is:\n\n" + corpus.take(block, length, rng)
            else:
                filler = corpus.take(corpus.prose, length - len(said) - 1, rng)
            content = (f"{filler} {said}" if rng.random() < 0.5 else f"{said} {filler}").strip()
            first_user = False
        else:
            if kind == "paste" or rng.random() < CODE_SHARE:
                code_len = length if kind == "paste" else length // 2
                prose = corpus.take(corpus.prose, length - code_len, rng)
                content = (f"{prose}\n\n```python\n"
                           f"{corpus.take(corpus.code, code_len, rng)}\n```").strip()
            else:
                content = corpus.take(corpus.prose, length, rng)
        if not content or content.isspace():
            content = rng.choice(_ACKS)
        # User think time 10 s - 10 min, answers 2-60 s; now and then a pause of hours.
        if role == "user" and out and rng.random() < 0.03:
            t += rng.uniform(3_600, 36_000)
        t += (math.exp(rng.uniform(math.log(10), math.log(600))) if role == "user"
              else rng.uniform(2, 60)) + 1
        out.append({"role": role, "content": content,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))})
    return {"id": conv_id, "messages": out}


def generate_conversations(n: int, *, entities: int | None = None, seed: int = 0,
                           scale: float = 1.0) -> list[dict]:
    """``n`` conversations shaped like real chat history, grouped per entity.

    Args:
        n: conversations in all.
        entities: how many entities (users) own them; default one per 20 conversations. Heavy
            users own many: conversations go to entities with log-normal weights, each
            entity at least one.
        seed: the same seed, n, entities and scale give the same conversations.
        scale: multiplies every conversation's message count and characters (at least one
            message each); 1.0 is the real-history shape, smaller is quicker.

    Returns:
        The seed JSON shape: ``[{"entity_id", "conversations": [{"id", "messages":
        [{"role", "content", "timestamp"}]}]}]``, entities in order, each entity's
        conversations in time order.
    """
    if n < 1:
        return []
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    entities = max(1, min(n, entities or round(n / DEFAULT_CONVERSATIONS_PER_ENTITY)))
    rng = random.Random(seed)
    corpus = _Corpus(seed)
    people = [_Entity(f"user-{e:05d}", random.Random(f"entity-{seed}-{e}"))
              for e in range(entities)]
    sizes = _sizes(n, rng, scale)
    weights = [math.exp(rng.gauss(0, 1.0)) for _ in range(entities)]
    owner = list(range(entities)) + rng.choices(range(entities), weights, k=n - entities)
    rng.shuffle(owner)
    starts = [_SPAN_START + rng.random() * _SPAN_SECONDS for _ in range(n)]
    grouped: list[list[dict]] = [[] for _ in range(entities)]
    order = sorted(range(n), key=lambda i: (owner[i], starts[i]))
    for i in order:
        messages, chars = sizes[i]
        grouped[owner[i]].append(_conversation(f"conv-{i:06d}", messages, chars, starts[i],
                                               people[owner[i]], corpus, rng))
    return [{"entity_id": people[e].entity_id, "conversations": grouped[e]}
            for e in range(entities)]


def write_seed_file(path: str | Path, n: int, **kwargs: Any) -> dict:
    """Write ``generate_conversations(n, **kwargs)`` as a seed JSON file (UTF-8, a list of
    per-entity objects, readable by ``python -m memori_nb seed`` / ``load_seed_file``);
    returns :func:`describe` of what was written (not printed)."""
    seeds = generate_conversations(n, **kwargs)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(seeds, handle, ensure_ascii=False)
    return describe(seeds, out=None)


def _p(values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def describe(seeds: list[dict], *, out: Callable[[str], Any] | None = print) -> dict:
    """The size distribution of ``seeds`` (as :func:`generate_conversations` returns them):
    messages and characters per conversation (median, p99, max), conversations over 800k
    characters, message sizes and roles. Printed through ``out`` (``None``: silent)."""
    messages, chars, message_chars = [], [], []
    roles: dict[str, int] = {}
    for seed in seeds:
        for conv in seed["conversations"]:
            sizes = [len(m["content"]) for m in conv["messages"]]
            messages.append(len(sizes))
            chars.append(sum(sizes))
            message_chars += sizes
            for m in conv["messages"]:
                roles[m["role"]] = roles.get(m["role"], 0) + 1
    if not messages:
        return {"conversations": 0}
    n = len(messages)
    d = {"conversations": n, "entities": len(seeds),
         "messages": {"median": statistics.median(messages), "p99": _p(messages, 0.99),
                      "max": max(messages), "total": sum(messages)},
         "chars": {"median": statistics.median(chars), "p99": _p(chars, 0.99),
                   "max": max(chars), "total": sum(chars)},
         "over_800k": sum(c > 800_000 for c in chars),
         "message_chars": {"min": min(message_chars),
                           "median": statistics.median(message_chars),
                           "p99": _p(message_chars, 0.99), "max": max(message_chars)},
         "under_3_messages": sum(m < 3 for m in messages),
         "roles": dict(sorted(roles.items()))}
    if out is not None:
        m, c, mc = d["messages"], d["chars"], d["message_chars"]
        out(f"{n:,} conversations, {len(seeds):,} entities, {m['total']:,} messages, "
            f"{c['total']:,} characters")
        out(f"  messages per conversation   median {m['median']:>9,.0f}   p99 {m['p99']:>9,}   "
            f"max {m['max']:>9,}   (under 3: {d['under_3_messages']:,})")
        out(f"  characters per conversation median {c['median']:>9,.0f}   p99 {c['p99']:>9,}   "
            f"max {c['max']:>9,}   (over 800k: {d['over_800k']})")
        out(f"  characters per message      min {mc['min']:,}   median {mc['median']:,.0f}   "
            f"p99 {mc['p99']:,}   max {mc['max']:,}")
        out(f"  roles {d['roles']}")
    return d


def _fact_stats(seeds: list[dict]) -> str:
    """What the local extractor finds: facts per conversation and distinct facts."""
    from memori_nb.backends.local import extract
    from memori_nb.models import Message

    per_conversation, distinct, texts = [], set(), set()
    for seed in seeds:
        for conv in seed["conversations"]:
            facts = extract([Message(role=m["role"], content=m["content"])
                             for m in conv["messages"]]).facts
            per_conversation.append(len(facts))
            distinct |= {(seed["entity_id"], f) for f in facts}
            texts |= set(facts)
    return (f"  local extractor: {sum(per_conversation):,} facts (median "
            f"{statistics.median(per_conversation):.0f}, max {max(per_conversation)} per "
            f"conversation), {len(distinct):,} distinct per entity, {len(texts):,} distinct texts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--entities", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--write", type=Path, default=None, help="also write a seed JSON file")
    parser.add_argument("--facts", action="store_true",
                        help="also run the local extractor and count the facts it finds")
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = generate_conversations(args.n, entities=args.entities, seed=args.seed,
                                   scale=args.scale)
    elapsed = time.perf_counter() - started
    d = describe(seeds)
    print(f"  generated in {elapsed:.2f} s (seed {args.seed}, scale {args.scale})")
    if args.scale == 1.0:
        n = d["conversations"]
        print(f"  targets: median {TARGETS['median_messages']} messages and "
              f"{TARGETS['median_chars']:,} characters; p99 {TARGETS['p99_messages']} and "
              f"{TARGETS['p99_chars']:,}; about {TARGETS['over_800k_per_1000'] * n / 1000:g} "
              f"over 800k")
    if args.facts:
        print(_fact_stats(seeds))
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            json.dump(seeds, handle, ensure_ascii=False)
        print(f"  wrote {args.write} ({args.write.stat().st_size / 1e6:,.1f} MB)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
