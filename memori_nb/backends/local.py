"""The offline ``local`` augmentation backend: a small, deterministic rule-based extractor.

It needs no network and no key, and exists so the whole pipeline, the tests and the notebooks
run offline. It is honest, not clever. What it **can** find, in messages with role ``user``
only (assistant and system text is ignored), as triples about the subject ``user``:

- possessions: "I just bought a Tesla Model 3", "I own ...", "I drive a ..." (``owns``,
  ``drives``);
- pets: "I have a dog named Biscuit", "I adopted a puppy named Mochi", "my cat Miso"
  (``has_dog``, ``has_cat`` ...), "I have two cats" (``has_pet``);
- preferences: "I love/like/enjoy/adore ...", "I'm a big fan of ...", "I'm into ..."
  (``likes``), "I prefer ..." (``prefers``), "I hate ...", "I can't stand ...",
  "I don't like ..." (``dislikes``), "my favorite food is ..." (``favorite_food``),
  "I play ..." (``plays``);
- places: "I live in ...", "I'm from ...", "I moved to ...", "I'm moving to ..."
  (``lives_in``, ``is_from``, ``moved_to``, ``is_moving_to``);
- work and studies: "I work at/for ...", "I work as a ...", "I'm a software engineer at ..."
  (``works_at``, ``works_as``), "I study ... at ...", "I'm a student at ...",
  "I'm learning ..." (``studies``, ``studies_at``, ``is_a``, ``is_learning``);
- family: "my wife Anna", "my sister's name is Li" (``has_wife``, ``has_sister`` ...),
  "I'm married to Sam" (``is_married_to``), "I have two kids" (``has_children``,
  ``has_siblings``);
- plans: "I'm planning to ...", "I plan to ...", "I'm going to ..." (``plans_to``),
  "I'm going to Lisbon" (``plans_to_go_to``), "I'm planning a trip to ..." (``is_planning``);
- names: "my name is ...", "call me ..." (``is_named``; the name must be capitalised);
- diet and health: "I'm allergic to ...", "I have a peanut allergy" (``is_allergic_to``),
  "I'm vegetarian" (``follows_diet``), "I don't eat ..." (``avoids_eating``).

"I'm", "I’m" (curly apostrophe), "Im" and "I am" all work, adverbs such as "just", "really",
"also" are skipped, the verb part matches in any case, and objects keep their original
casing, cut at the end of their clause ("and", "because", "last year", ...) and stripped of
articles. What it **cannot** do:

- understand anything not phrased as one of those patterns: no paraphrase, no inference,
  first person singular only ("we live in Chicago" gives nothing);
- resolve references ("I bought it", "she lives there" give nothing);
- handle negation beyond "don't/do not like" → ``dislikes`` and "don't eat" →
  ``avoids_eating``; other negated statements simply do not match ("I'm not from here"),
  nor does the past ("I used to live in ...");
- tell facts about other people unless phrased as "my <relative or pet> <Name>";
- tell quoted or reported speech, hypotheticals, sarcasm or jokes from statements;
- read other languages.

Example:
    >>> from memori_nb.models import Message
    >>> extract([Message(role="user", content="I just bought a Tesla Model 3!")]).facts
    ('user owns Tesla Model 3',)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..models import Extraction, Message, Triple
from .base import AugmentationRequest

__all__ = ["LocalBackend", "extract"]

SUBJECT_NAME = "user"
SUBJECT_TYPE = "person"
MAX_OBJECT_CHARS = 60
MAX_TOPIC_CHARS = 120
MAX_SUMMARY_CHARS = 300

# --- the patterns ---------------------------------------------------------------------------
# Two stages keep this fast (a few µs per message), both on a lowercased copy of the text
# (same length, so positions map back to the original, whose casing objects keep):
# _HEAD finds where a first-person statement starts ("i ", "i'm ", "i’ve ", "i have ", "my ",
# "call me "), skipping adverbs; then only the rules of that kind are tried, anchored there.
# A rule is (kind, pattern up to the object, predicate, object type, object pattern).
# The object pattern starts with its capturing group; predicates ending in "_" take their
# suffix from the rule's (?P<k>...) keyword group ("has_" + "wife", "favorite_" + "food").

_AP = "['’ʼ`´]"                                    # straight, curly and stray apostrophes
_ADV = (r"(?:(?:just|recently|finally|really|also|actually|still|absolutely|totally|truly|"
        r"currently|now|already|definitely|originally|honestly|kinda|kind\s+of|"
        r"pretty\s+much|very\s+much)\s+)*")
# Each kind of head ends in a group named after the kind that captures (without consuming)
# the next letter, so ``head.lastgroup`` is the kind and ``head.group(kind)`` the letter.
_HEAD = re.compile(
    rf"[icm](?<![\w'’ʼ`´][icm])(?:"
    rf"(?<=i)(?:{_AP}?m|\s+am)\s+{_ADV}(?=(?P<im>[^\W_]?))"
    rf"|(?<=i)(?:{_AP}ve|\s+have)\s+{_ADV}(?=(?P<ive>[^\W_]?))"
    rf"|(?<=i)\s+{_ADV}(?=(?P<i>[^\W_]?))"
    rf"|(?<=m)y\s+(?=(?P<my>[^\W_]?))"
    rf"|(?<=c)all\s+me\s+(?=(?P<call>)))")
_DONT = rf"(?:don{_AP}?t|do\s+not)\s+(?:really\s+)?"
_ART = r"(?:an?|the|my|our)\s+"
_NUM = r"(?:an?|one|two|three|four|five|six|\d+)\s+"
# Up to three words; _proper_name keeps the leading capitalised ones of the original text,
# so "my wife is a doctor" gives nothing and "my wife Anna and I" gives "Anna".
_NAME = r"([^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*){0,2})"
# The object: everything up to sentence punctuation; _clean cuts it at clause words.
_OBJ = r"([^\n.!?;,:()\"…]{1,100})"

_PETS = ("dog|cat|puppy|kitten|parrot|bird|hamster|rabbit|bunny|turtle|tortoise|goldfish|"
         "fish|horse|pony|snake|lizard|gecko|guinea\\s+pig|ferret|budgie")
_RELATIVES = ("wife|husband|partner|fianc[ée]e?|girlfriend|boyfriend|son|daughter|mom|mum|"
              "mother|dad|father|brother|sister|grandma|grandmother|grandpa|grandfather|"
              "aunt|uncle|cousin|niece|nephew|best\\s+friend|friend|roommate|boss")
_JOBS = ("engineer|developer|programmer|designer|architect|teacher|professor|lecturer|nurse|"
         "doctor|physician|surgeon|dentist|pharmacist|therapist|lawyer|accountant|analyst|"
         "consultant|manager|scientist|researcher|writer|journalist|editor|chef|cook|baker|"
         "artist|musician|photographer|mechanic|electrician|plumber|carpenter|pilot|"
         "firefighter|officer|paramedic|veterinarian|vet|librarian|farmer|driver|"
         "translator|economist|marketer|recruiter|entrepreneur|founder|freelancer|barista")
_DIETS = ("vegetarian|vegan|pescatarian|keto|paleo|gluten[-\\s]free|lactose[-\\s]intolerant|"
          "celiac|coeliac|diabetic|dairy[-\\s]free")
_GOT = r"(?:got\s+)?"

_RULES: tuple[tuple[str, str, str, str, str], ...] = (
    # "my ..." and "call me ..."
    ("my", rf"name(?:\s+is|{_AP}s)\s+", "is_named", "person", _NAME),
    ("my", r"(?:all[-\s]time\s+)?favou?rite\s+(?P<k>[\w-]+(?:\s+[\w-]+)??)\s+"
           r"(?:is|are|has\s+to\s+be|would\s+be)\s+", "favorite_", "thing", _OBJ),
    ("my", r"(?:(?:older|younger|little|big|baby|twin|eldest|oldest|youngest)\s+)?"
           rf"(?P<k>{_RELATIVES}|{_PETS})(?:{_AP}s\s+name\s+is|\s+is\s+(?:called|named)|"
           r"\s+named|\s+called|,)?\s+", "has_", "person", _NAME),
    ("call", "", "is_named", "person", _NAME),
    # "I've ..." / "I have ..." (also tried after "I <adverb> have")
    ("ive", rf"{_GOT}(?:an?|one)\s+(?:[\w-]+\s+){{0,2}}?(?P<k>{_PETS})\s+(?:named|called)\s+",
     "has_", "pet", _NAME),
    ("ive", _GOT, "has_pet", "pet", rf"({_NUM}(?:[\w-]+\s+){{0,2}}?(?:{_PETS})(?:s|es)?)\b"),
    ("ive", _GOT, "has_children", "person",
     rf"({_NUM}(?:(?:little|young|grown|small|teenage)\s+)?"
     r"(?:kids?|children|child|sons?|daughters?|boys?|girls?|twins))\b"),
    ("ive", _GOT, "has_siblings", "person",
     rf"({_NUM}(?:(?:older|younger|little|big)\s+)?(?:brothers?|sisters?|siblings?))\b"),
    ("ive", rf"{_GOT}(?:an?\s+)?(?:severe\s+|mild\s+|bad\s+)?", "is_allergic_to", "allergen",
     r"([\w-]+(?:\s+[\w-]+)?)(?=\s+allergy\b)"),
    ("ive", r"(?:been\s+living|lived)\s+in\s+", "lives_in", "place", _OBJ),
    ("ive", r"(?:moved|relocated)\s+to\s+", "moved_to", "place", _OBJ),
    ("ive", r"been\s+working\s+as\s+", "works_as", "occupation", _OBJ),
    ("ive", r"been\s+working\s+(?:at|for)\s+", "works_at", "organization", _OBJ),
    ("ive", r"been\s+(?:learning|studying)\s+", "is_learning", "topic", _OBJ),
    ("ive", r"(?:bought|purchased)\s+(?:myself\s+)?", "owns", "product", _OBJ),
    ("ive", r"always\s+(?:loved|liked|enjoyed)\s+", "likes", "thing", _OBJ),
    # "I'm ..." / "I am ..."
    ("im", r"(?:severely\s+|very\s+|deathly\s+|mildly\s+)?allergic\s+to\s+",
     "is_allergic_to", "allergen", _OBJ),
    ("im", r"(?:an?\s+)?(?:strict\s+)?", "follows_diet", "diet", rf"({_DIETS})\b"),
    ("im", r"(?:(?:an?\s+)?(?:big\s+|huge\s+|massive\s+)?fan\s+of|into)\s+", "likes", "thing",
     _OBJ),
    ("im", r"(?:living|based)\s+in\s+", "lives_in", "place", _OBJ),
    ("im", r"from\s+", "is_from", "place", _OBJ),
    ("im", r"(?:moving|relocating)\s+to\s+", "is_moving_to", "place", _OBJ),
    ("im", r"(?:married|engaged)\s+to\s+", "is_married_to", "person", _NAME),
    ("im", r"(?:studying|an?\s+student)\s+at\s+", "studies_at", "organization", _OBJ),
    ("im", r"(?:studying|majoring\s+in)\s+", "studies", "topic", _OBJ),
    ("im", r"learning\s+", "is_learning", "topic", _OBJ),
    ("im", r"working\s+as\s+", "works_as", "occupation", _OBJ),
    ("im", r"working\s+(?:at|for)\s+", "works_at", "organization", _OBJ),
    ("im", r"an?\s+", "works_as", "occupation", rf"((?:[\w-]+\s+){{0,3}}?(?:{_JOBS})s?)\b"),
    ("im", r"an?\s+", "is_a", "role", r"((?:[\w-]+\s+){0,2}?student)\b"),
    ("im", r"(?:planning|hoping)\s+(?:to|on)\s+", "plans_to", "activity", _OBJ),
    ("im", r"planning\s+(?=an?\s)", "is_planning", "event", _OBJ),
    ("im", r"(?:going\s+to|gonna)\s+", "plans_to", "activity or place", _OBJ),
    # "I ..."
    ("i", r"(?:bought|purchased)\s+(?:myself\s+|me\s+)?", "owns", "product", _OBJ),
    ("i", r"own\s+", "owns", "product", _OBJ),
    ("i", rf"drive\s+(?={_ART})", "drives", "product", _OBJ),
    ("i", rf"(?:hate|dislike|detest|loathe|can{_AP}?t\s+stand|{_DONT}(?:like|enjoy))\s+",
     "dislikes", "thing", _OBJ),
    ("i", rf"(?:{_DONT}|never\s+|can{_AP}?t\s+|cannot\s+)eat\s+", "avoids_eating", "food", _OBJ),
    ("i", r"(?:love|like|enjoy|adore)\s+", "likes", "thing", _OBJ),
    ("i", r"prefer\s+", "prefers", "thing", _OBJ),
    ("i", r"play\s+", "plays", "activity", _OBJ),
    ("i", r"live\s+in\s+", "lives_in", "place", _OBJ),
    ("i", r"come\s+from\s+", "is_from", "place", _OBJ),
    ("i", r"(?:moved|relocated)\s+to\s+", "moved_to", "place", _OBJ),
    ("i", r"study\s+at\s+", "studies_at", "organization", _OBJ),
    ("i", r"(?:study|major\s+in)\s+", "studies", "topic", _OBJ),
    ("i", r"work\s+(?:(?:part|full)[-\s]time\s+)?as\s+", "works_as", "occupation", _OBJ),
    ("i", r"work\s+(?:at|for)\s+", "works_at", "organization", _OBJ),
    ("i", r"(?:plan|intend|hope)\s+to\s+", "plans_to", "activity", _OBJ),
)


def _group_rules() -> dict[str, list[tuple[frozenset[str], str]]]:
    """Per head kind, each rule as (letters it can start with, regex alternative).

    Rule i's object is group ``o{i}`` and its keyword ``k{i}``; the object group closes last,
    so ``match.lastgroup`` names the rule. Every rule starts with a literal word of its own
    pattern (or a number), so the initials of the words in the pattern are a safe superset
    of the letters a match can start with ("0" stands for any digit).
    """
    kinds: dict[str, list[tuple[frozenset[str], str]]] = {}
    for i, (kind, before, _predicate, _type, obj) in enumerate(_RULES):
        alternative = f"{before.replace('(?P<k>', f'(?P<k{i}>')}(?P<o{i}>{obj[1:]}"
        fixed_object = obj not in (_OBJ, _NAME)       # e.g. a diet or "two cats"
        source = re.sub(r"\\[a-zA-Z]|\(\?P<\w+>", "", before + (obj if fixed_object else ""))
        letters = {word[0] for word in re.findall(r"[^\W\d_]+", source)}
        if fixed_object and r"\d" in obj:
            letters.add("0")
        kinds.setdefault(kind, []).append((frozenset(letters), alternative))
        if kind == "ive":                            # "I also have ...", "I adopted a ..."
            kinds.setdefault("i", []).append(
                (frozenset("har"), rf"(?:have|adopted|rescued)\s+{alternative}"))
    return kinds


_RULES_BY_KIND = _group_rules()
# Per rule object group "o{i}": (predicate, object type, is a name, keyword group or None).
_RULE_INFO = {f"o{i}": (predicate, object_type, obj is _NAME,
                        f"k{i}" if "(?P<k>" in before else None)
              for i, (_kind, before, predicate, object_type, obj) in enumerate(_RULES)}
_PATTERNS: dict[tuple[str, str], re.Pattern[str] | None] = {}


def _rules_for(kind: str, letter: str) -> re.Pattern[str] | None:
    """The rules of ``kind`` that can start with ``letter``, compiled once; None if none can."""
    key = (kind, letter)
    if key not in _PATTERNS:
        letter = "0" if letter.isdigit() else letter
        alternatives = [alternative for letters, alternative in _RULES_BY_KIND[kind]
                        if kind == "call" or letter in letters]
        _PATTERNS[key] = re.compile("|".join(alternatives)) if alternatives else None
    return _PATTERNS[key]


# Where an object ends: a clause word ("and", "because" ...), a time or filler phrase
# ("last year", "too"), and for places, organisations, jobs and topics, a detail
# ("Globex since 2019", "nurse at the city hospital", "Spanish on Duolingo").
_CLAUSE = ("and", "but", "because", "cause", "so", "since", "which", "that", "who", "when",
           "whenever", "while", "though", "although", "if", "or", "until", "unless", "whereas",
           "plus", "lol", "haha")
_TAIL = ("last", "next", "this", "tomorrow", "tonight", "today", "later", "soon", "now",
         r"right\s+now", "ago", "recently", "originally", "again", "someday", "eventually", "too",
         r"as\s+well", r"a\s+lot", r"so\s+much", r"very\s+much", "anyway", "every", "each",
         "once", "twice", "before", "after", r"more\s+than",
         r"on\s+(?:the\s+)?(?:weekends?|\w+days?)",
         r"in\s+(?:\d+|an?|the|my|our|morning|evening|january|february|march|april|may|june|"
         r"july|august|september|october|november|december|spring|summer|fall|autumn|winter)")
_PLACE_DETAIL = ("with", "for", "on", "at", "from", "during", "about", "back")
_ORG_DETAIL = ("with", "for", "on", "at", "from", "during", "in", "as")


def _cut(*groups: tuple[str, ...]) -> re.Pattern[str]:
    """A regex for " <one of the words>" or " - ", to ``search`` a lowercased object.

    The words are grouped by first letter behind a one-character lookahead: the regex engine
    tries alternatives one by one at every space, and this makes a cut search ~4x faster.
    """
    by_letter: dict[str, list[str]] = {}
    for word in (word for group in groups for word in group):
        by_letter.setdefault(word[0], []).append(word[1:])
    trie = "|".join(f"{letter}(?:{'|'.join(rests)})" for letter, rests in by_letter.items())
    return re.compile(rf" (?=[{''.join(by_letter)}\-–—])(?:(?:{trie})\b|[-–—]\s)")


_CUT_DEFAULT = _cut(_CLAUSE, _TAIL, ("with", "for"))
_CUTS = {"place": _cut(_CLAUSE, _TAIL, _PLACE_DETAIL), "activity": _cut(_CLAUSE, _TAIL)}
_CUTS["activity or place"] = _CUTS["activity"]
for _type in ("organization", "occupation", "topic", "role", "event"):
    _CUTS[_type] = _cut(_CLAUSE, _TAIL, _ORG_DETAIL)
# After a job or a study subject, "at/for <organisation>" is a second fact.
_FOLLOW_ORG = {"works_as": "works_at", "studies": "studies_at", "is_a": "studies_at"}
_AT_ORG = re.compile(r"[ \t]+(?:at|for|with)[ \t]+" + _OBJ)

_ARTICLES = frozenset("a an the my our some this that these those".split())
# An object starting with one of these is not a fact ("I like it", "I play with ...").
_STOP_FIRST = frozenset(
    "it that this them you your yours him her his its their there here myself yourself what how "
    "when where why which who whom something anything everything nothing someone anyone lot "
    "lots with in on at for about around of from up out back to be being every way idea "
    "fact thought part one ones answer suggestion explanation response sound look feeling "
    "future past day week month year time need ask say tell have wait keep give see check "
    "let do think figure show send look stop".split())
_KEEP_TO = frozenset({"likes", "dislikes", "prefers", "is_learning"})  # "likes to cook"
_FOODS = frozenset(
    "pizza sushi pasta coffee tea chocolate ramen tacos taco curry burgers burger ice cream "
    "cheese bread noodles dumplings pho steak chicken fish salad soup rice beans tofu cake "
    "pastries pastry croissants wine beer food cooking baking fruit vegetables seafood shrimp "
    "peanuts nuts dairy gluten eggs milk lasagna paella kimchi falafel hummus avocado "
    "cilantro mushrooms olives bbq barbecue brunch dessert desserts cookies chickpeas lentils "
    "risotto hummus".split())
_FAVORITE_TYPES = {"food": "food", "dish": "food", "meal": "food", "snack": "food",
                   "drink": "food", "dessert": "food", "cuisine": "food", "restaurant": "place",
                   "city": "place", "country": "place", "place": "place", "sport": "activity",
                   "hobby": "activity", "activity": "activity", "book": "book", "movie": "movie",
                   "film": "movie", "band": "music", "song": "music", "singer": "person",
                   "artist": "person", "author": "person", "color": "color", "colour": "color"}
_SUFFIX_ALIASES = {"mom": "mother", "mum": "mother", "dad": "father", "grandma": "grandmother",
                   "grandpa": "grandfather", "puppy": "dog", "kitten": "cat", "bunny": "rabbit",
                   "fiancé": "fiance", "fiancée": "fiancee"}
_PETS_SET = frozenset(re.sub(r"\\s\+", "_", _PETS).split("|"))
_TOPICS = (  # (predicate prefix, attribute); "has_<x>" is "pets" or "family" by object type
    ("is_named", "identity"), ("likes", "personal_preferences"),
    ("dislikes", "personal_preferences"), ("prefers", "personal_preferences"),
    ("favorite_", "personal_preferences"), ("plays", "hobbies"), ("lives_in", "location"),
    ("is_from", "location"), ("moved_to", "location"), ("is_moving_to", "location"),
    ("is_married_to", "family"), ("works_", "work"), ("studies", "education"),
    ("is_learning", "education"), ("is_a", "education"), ("owns", "possessions"),
    ("drives", "possessions"), ("is_allergic_to", "diet_and_health"),
    ("follows_diet", "diet_and_health"), ("avoids_eating", "diet_and_health"),
    ("plans_to", "plans"), ("is_planning", "plans"),
)
# Triples are frozen, so equal ones can be shared: building one (and its fact string and
# topic) costs more than finding it. A found fact is (fact string, triple, topic attribute).
_Found = tuple[str, Triple, str]
_FOUND_CACHE: dict[tuple[str, str, str], _Found] = {}
_FOUND_CACHE_SIZE = 20_000


def _found(predicate: str, name: str, object_type: str) -> _Found:
    """The fact ``user --predicate--> name``, shared when seen before."""
    key = (predicate, name, object_type)
    found = _FOUND_CACHE.get(key)
    if found is None:
        if len(_FOUND_CACHE) >= _FOUND_CACHE_SIZE:
            _FOUND_CACHE.clear()
        triple = Triple(subject_name=SUBJECT_NAME, subject_type=SUBJECT_TYPE,
                        predicate=predicate, object_name=name, object_type=object_type)
        found = _FOUND_CACHE[key] = (triple.fact, triple, _topic(predicate, object_type))
    return found


def _shorten(text: str, limit: int) -> str:
    """Collapse whitespace and cut at a word boundary to at most ``limit`` characters."""
    text = " ".join(text[: limit * 4].split())
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:-|") + "…"


def _lower_same_length(text: str) -> str:
    """``text.lower()``, but characters whose lowercase is longer (e.g. "İ") stay as they are."""
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _clean(text: str, low: str, start: int, end: int, object_type: str,
           predicate: str) -> tuple[str, int]:
    """Trim ``text[start:end]`` to the object; return (object or "", where the object ends)."""
    cut = _CUTS.get(object_type, _CUT_DEFAULT).search(low, start, end)
    if cut is not None:
        end = cut.start()
    words = text[start:end].split()
    while len(words) > 1 and words[0].lower() in _ARTICLES:
        del words[0]
    if not words:
        return "", end
    first = words[0].lower()
    if (first == "to" and predicate not in _KEEP_TO
            or first == "about" and object_type == "topic") and len(words) > 1:
        del words[0]                          # "I'm learning about X": the topic is X
        first = words[0].lower()
    if first in _STOP_FIRST and not (first == "to" and len(words) > 1):
        return "", end
    return _capped(" ".join(words)), end


def _capped(name: str) -> str:
    """At most MAX_OBJECT_CHARS, cut at a word boundary, without trailing quotes or dashes."""
    if len(name) > MAX_OBJECT_CHARS:
        name = name[:MAX_OBJECT_CHARS + 1].rsplit(" ", 1)[0][:MAX_OBJECT_CHARS]
    return name.rstrip(" '’-*~")


def _proper_name(words: str) -> str:
    """The leading capitalised words ("Anna and I" → "Anna"); "" if there are none."""
    kept = []
    for word in words.split():
        if not word[0].isupper():
            break
        kept.append(word)
    if not kept or kept[0] == "I":
        return ""
    return _capped(" ".join(kept))


def _topic(predicate: str, object_type: str) -> str:
    """The process attribute for a predicate family ("lives_in" → "location")."""
    if predicate.startswith("has_"):
        return "pets" if object_type == "pet" else "family"
    return next((topic for prefix, topic in _TOPICS if predicate.startswith(prefix)), "other")


def _guess_type(name: str) -> str:
    """Refine the generic ``thing`` type of preferences into food or activity."""
    words = name.lower().split()
    if not _FOODS.isdisjoint(words):
        return "food"
    if words[0] == "to" or words[0].endswith("ing"):
        return "activity"
    return "thing"


def _facts_in(text: str) -> list[_Found]:
    """All facts in one user message, in order of appearance."""
    found: list[_Found] = []
    low = text.lower()
    if len(low) != len(text):                 # positions in low must map back to text
        low = _lower_same_length(text)
    pos = 0
    while (head := _HEAD.search(low, pos)) is not None:
        pos = head.end()
        kind = head.lastgroup
        key = (kind, head.group(kind))
        rules = _PATTERNS[key] if key in _PATTERNS else _rules_for(*key)
        if rules is None or (match := rules.match(low, pos)) is None:
            continue                          # e.g. "I think": no rule starts with "t"
        group = match.lastgroup
        predicate, object_type, is_name, keyword_group = _RULE_INFO[group]
        start, end = match.span(group)
        if keyword_group is not None:         # has_<relative/pet>, favorite_<category>
            keyword = "_".join(match.group(keyword_group).replace("-", " ").split())
            keyword = _SUFFIX_ALIASES.get(keyword, keyword)
            if predicate == "has_" and keyword in _PETS_SET:
                object_type = "pet"
            elif predicate == "favorite_":
                object_type = _FAVORITE_TYPES.get(keyword, "thing")
            predicate += keyword
        if is_name:
            pos = start                       # only the capitalised words were the name
            name = _proper_name(text[start:end])
        else:
            name, pos = _clean(text, low, start, end, object_type, predicate)
            pos = max(pos, start + 1)
        if not name:
            continue
        if object_type == "thing":
            object_type = _guess_type(name)
        elif object_type == "activity or place":     # "I'm going to Lisbon / the gym"?
            if low.startswith("the ", start) or text[start].isupper() and not text.isupper():
                predicate, object_type = "plans_to_go_to", "place"
                name, pos = _clean(text, low, start, end, object_type, predicate)
                if not name:
                    continue
            else:
                object_type = "activity"
        found.append(_found(predicate, name, object_type))
        if predicate in _FOLLOW_ORG and (org := _AT_ORG.match(low, pos)) is not None:
            start, end = org.span(1)
            name, pos = _clean(text, low, start, end, "organization", "works_at")
            if name:
                found.append(_found(_FOLLOW_ORG[predicate], name, "organization"))
    return found


def extract(messages: Sequence[Message], summary: str | None = None) -> Extraction:
    """Find facts the user states about themselves, with a short summary. Pure and fast.

    Only messages with role ``"user"`` are read. See the module docstring for what is found.

    Args:
        messages: the conversation (or chunk of it), in order.
        summary: the previous chunk's summary, carried into this one's summary (or None).

    Returns:
        An :class:`~memori_nb.models.Extraction`: triples about subject ``user`` (duplicate
        facts removed, first occurrence kept), their fact strings, a summary and sorted topic
        attributes (e.g. ``("location", "personal_preferences")``).

    Example:
        >>> from memori_nb.models import Message
        >>> result = extract([Message(role="user", content="I live in Porto and I love surfing.")])
        >>> [(t.predicate, t.object_name, t.object_type) for t in result.triples]
        [('lives_in', 'Porto', 'place'), ('likes', 'surfing', 'activity')]
        >>> result.facts
        ('user lives_in Porto', 'user likes surfing')
    """
    triples: dict[str, Triple] = {}           # by fact, in first-seen order
    topics: set[str] = set()
    first_user = None
    for message in messages:
        if message.role != "user":
            continue
        text = message.content
        if first_user is None and text and not text.isspace():
            first_user = text
        for fact, triple, topic in _facts_in(text):
            if fact not in triples:
                triples[fact] = triple
                topics.add(topic)
    return Extraction(triples=tuple(triples.values()), facts=tuple(triples),
                      summary=_summarize(first_user, len(triples), summary),
                      attributes=tuple(sorted(topics)))


def _summarize(first_user: str | None, fact_count: int, previous: str | None) -> str:
    """Deterministic summary: the first user message, the fact count, the previous summary."""
    noun = "fact" if fact_count == 1 else "facts"
    if first_user is None:
        text = f"No user messages ({fact_count} {noun})."
    else:
        text = f"User talked about: {_shorten(first_user, MAX_TOPIC_CHARS)} ({fact_count} {noun})."
    if previous and not previous.isspace():   # keep the newest part whole, shorten the rest
        text = f"{_shorten(previous, MAX_SUMMARY_CHARS - len(text) - 3)} | {text}"
    return text


class LocalBackend:
    """Offline augmentation backend built on :func:`extract`: no network, no key, deterministic.

    Example:
        >>> import asyncio
        >>> from memori_nb.backends.base import AugmentationRequest
        >>> from memori_nb.models import Message
        >>> request = AugmentationRequest(entity_id="u1", conversation_id="c1",
        ...     messages=(Message(role="user", content="I work at Acme Corp."),))
        >>> asyncio.run(LocalBackend().augment(request)).facts
        ('user works_at Acme Corp',)
    """

    name = "local"
    requires_network = False

    async def augment(self, request: AugmentationRequest) -> Extraction:
        """Extract facts from ``request.messages``, carrying ``request.summary`` over."""
        return extract(request.messages, request.summary)

    async def aclose(self) -> None:
        """Nothing to close; here for the backend interface."""

    def __repr__(self) -> str:
        return "LocalBackend()"
