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
  "I'm vegetarian" (``follows_diet``), "I don't eat ..." (``avoids_eating``);
- anything else said as a first-person clause, by one general rule tried where none of the
  above matches (topic attribute ``experiences``): "I <verb> [particle] [preposition]
  <object>", "we <past verb> ...", "I'm [so] <word> [preposition] <object>" and "I've [been]
  <participle> ...". The predicate is the verb as said, in the third person, with its
  particle and preposition: "I went to a support group yesterday" → ``went_to`` "support
  group", "I paint landscapes" → ``paints``, "I'm swamped with the kids & work" →
  ``is_swamped_with``, "I've been volunteering at a shelter" → ``has_been_volunteering_at``,
  "we went camping" → ``went`` "camping". The object is at most five words, cut like the
  others; an object that is only vague words ("great", "a lot"), names the other person
  ("you", "your") or is the rest of another clause ("the advice I got was ...") is dropped.

No rule fires where the clause is not a statement of the user's: after "if", "wish",
"unless", "whether", "maybe", "what/how/why", a modal or "do/did" ("if I had a dog", "can I
ask", "what I want"), in a sentence ending with "?", or inside quotes (a quote is closed on
its own line, else it is a stray mark and hides nothing; a ``"`` right after a digit is inches:
"I'm 5'10\" tall", "a 12\" laptop"). The general rule also skips verbs of opinion, talk and
wishes ("I think/guess/know/mean/see/agree/hope/wish/bet", "I can't wait", "I want", "I used
to"), negations and near misses ("I no longer ...", "I never ...", "I almost/nearly/barely/
hardly ...") and states about the other person or the talk ("I'm glad/sorry/happy for you",
"I'm sure", "I'm not ...", "I'm no longer ..."); after "we" it takes only past tenses ("we
should", "we live" give nothing: what the user did with others, not plans or habits of a
group). No rule reads across a line break: "I live in" at the end of a line gives nothing.

The summary is made of what was found: "User owns Tesla Model 3; lives in Denver; likes
hiking." (specific facts first, as many as fit in about 120 characters, then "and N more
facts"); with no facts, "No facts found; the user's most frequent words: ..." (the five most
frequent words of four letters or more that are not chat filler, from the first 20,000
characters the user wrote).

"I'm", "I’m" (curly apostrophe), "Im" and "I am" all work, adverbs such as "just", "really",
"also" are skipped, the verb part matches in any case, and objects keep their original
casing, cut at the end of their clause ("and", "because", "last year", ...) and stripped of
articles. What it **cannot** do:

- understand anything not said in the first person: no paraphrase, no inference, nothing
  about "my kids are ..." or "she ..." beyond the named relatives and pets above;
- tell a verb from a noun or adjective: the general rule trusts that the word after "I" is a
  verb, so its predicates are only as good as the phrasing ("I read three books" →
  ``reads``: the present and past of "read", "run", "put" ... are one word), and a clause
  cut at five words can lose its end;
- resolve references ("I bought it", "she lives there" give nothing);
- handle negation beyond "don't/do not like" → ``dislikes`` and "don't/never/no longer eat"
  → ``avoids_eating``; other negated statements simply do not match ("I'm not from here",
  "I no longer live in ..."), nor does the past ("I used to live in ...");
- tell facts about other people unless phrased as "my <relative or pet> <Name>";
- tell reported speech without quotes ("she told me I'm ..."), sarcasm or jokes from
  statements, or hypotheticals not introduced by one of the words above;
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
from ..provenance import MAX_SOURCES
from .base import AugmentationRequest

__all__ = ["LocalBackend", "extract"]

SUBJECT_NAME = "user"
SUBJECT_TYPE = "person"
MAX_OBJECT_CHARS = 60
MAX_TOPIC_CHARS = 120
MAX_SUMMARY_CHARS = 300

# --- the patterns ---------------------------------------------------------------------------
# Two stages keep this fast (a few µs per message), both on a lowercased copy of the text
# (same length, so positions map back to the original, whose casing objects keep; line
# breaks are NUL there, so that no rule reads across one):
# _HEAD finds where a first-person statement starts ("i ", "i'm ", "i’ve ", "i have ", "my ",
# "call me ", "we "), skipping adverbs; then only the rules of that kind are tried, anchored
# there, and where none matches, the general clause rule (below) of that kind.
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
    rf"[icmw](?<![\w'’ʼ`´][icmw])(?:"
    rf"(?<=i)(?:{_AP}?m|\s+am)\s+{_ADV}(?=(?P<im>[^\W_]?))"
    rf"|(?<=i)(?:{_AP}ve|\s+have)\s+{_ADV}(?=(?P<ive>[^\W_]?))"
    rf"|(?<=i)\s+{_ADV}(?=(?P<i>[^\W_]?))"
    rf"|(?<=w)e\s+{_ADV}(?=(?P<we>[^\W_]?))"
    rf"|(?<=m)y\s+(?=(?P<my>[^\W_]?))"
    rf"|(?<=c)all\s+me\s+(?=(?P<call>)))")
_DONT = rf"(?:don{_AP}?t|do\s+not)\s+(?:really\s+)?"
_ART = r"(?:an?|the|my|our)\s+"
_NUM = r"(?:an?|one|two|three|four|five|six|\d+)\s+"
# Up to three words; _proper_name keeps the leading capitalised ones of the original text,
# so "my wife is a doctor" gives nothing and "my wife Anna and I" gives "Anna".
_NAME = r"([^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*){0,2})"
# The object: everything up to sentence punctuation, a quote or the end of the line (a break is
# NUL in the text the patterns read: see _facts_in); _clean cuts it at clause words.
_OBJ = r"([^\x00.!?;,:()\"“”…]{1,100})"

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
    ("i", rf"(?:{_DONT}|never\s+|no\s+longer\s+|can{_AP}?t\s+|cannot\s+)eat\s+",
     "avoids_eating", "food", _OBJ),
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
_UNSEEN = object()                          # a (kind, letter) whose rules are not compiled yet


def _rules_for(kind: str, letter: str) -> re.Pattern[str] | None:
    """The rules of ``kind`` that can start with ``letter``, compiled once; None if none can."""
    key = (kind, letter)
    if key not in _PATTERNS:
        letter = "0" if letter.isdigit() else letter
        alternatives = [alternative for letters, alternative in _RULES_BY_KIND.get(kind, ())
                        if kind == "call" or letter in letters]
        _PATTERNS[key] = re.compile("|".join(alternatives)) if alternatives else None
    return _PATTERNS[key]


# Where an object ends: a clause word ("and", "because" ...), a time or filler phrase
# ("last year", "too"), and for places, organisations, jobs and topics, a detail
# ("Globex since 2019", "nurse at the city hospital", "Spanish on Duolingo").
_CLAUSE = ("and", "but", "because", "cause", "so", "since", "which", "that", "who", "when",
           "whenever", "while", "though", "although", "if", "or", "until", "unless", "whereas",
           "plus", "lol", "haha")
_TAIL = ("last", "next", "this", "tomorrow", "tonight", "today", "yesterday", "lately",
         "nowadays", r"these\s+days", "later", "soon", "now",
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
# topic) costs more than finding it. A found fact is (fact string, triple, topic attribute,
# its part of the summary).
_Found = tuple[str, Triple, str, str]
_FOUND_CACHE: dict[tuple[str, str, str, str | None], _Found] = {}
_FOUND_CACHE_SIZE = 20_000


def _found(predicate: str, name: str, object_type: str, topic: str | None = None) -> _Found:
    """The fact ``user --predicate--> name``, shared when seen before."""
    key = (predicate, name, object_type, topic)
    found = _FOUND_CACHE.get(key)
    if found is None:
        if len(_FOUND_CACHE) >= _FOUND_CACHE_SIZE:
            _FOUND_CACHE.clear()
        triple = Triple(subject_name=SUBJECT_NAME, subject_type=SUBJECT_TYPE,
                        predicate=predicate, object_name=name, object_type=object_type)
        found = _FOUND_CACHE[key] = (triple.fact, triple,
                                      topic or _topic(predicate, object_type),
                                      f"{predicate.replace('_', ' ')} {name}")
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
    if not words:
        return "", end
    first = words[0].lower()
    while first in _ARTICLES and len(words) > 1:
        del words[0]
        first = words[0].lower()
    if (first == "to" and predicate not in _KEEP_TO
            or first == "about" and object_type == "topic") and len(words) > 1:
        del words[0]                          # "I'm learning about X": the topic is X
        first = words[0].lower()
    if first in _STOP_FIRST and not (first == "to" and len(words) > 1):
        return "", end
    name = " ".join(words)
    if len(name) > MAX_OBJECT_CHARS:
        return _capped(name), end
    return name.rstrip(" '’-*~"), end


def _capped(name: str) -> str:
    """At most MAX_OBJECT_CHARS, cut at a word boundary, without trailing quotes or dashes."""
    if len(name) > MAX_OBJECT_CHARS:
        name = name[:MAX_OBJECT_CHARS + 1].rsplit(" ", 1)[0][:MAX_OBJECT_CHARS]
    return name.rstrip(" '’-*~")


def _proper_name(words: str) -> str:
    """The leading capitalised words ("Anna and I" → "Anna"); "" if there are none."""
    kept = words.split()
    for index, word in enumerate(kept):
        if not word[0].isupper():
            del kept[index:]
            break
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


# --- the general clause rule -----------------------------------------------------------------
# Tried where no rule above matched: "I <verb> [particle] [preposition] <object>", "we <past
# verb> ...", "I'm [so] <word> [preposition] <object>", "I've [been] <participle> ...". The
# predicate is the verb as said, in the third person ("I paint ..." → ``paints``, "I went to
# ..." → ``went_to``, "I'm swamped with ..." → ``is_swamped_with``, "I've been to ..." →
# ``has_been_to``); the object is the rest of the clause, cut like the others and kept short.
_PREPS = ("to|at|in|into|on|onto|with|for|about|from|through|by|over|around|across|after|"
          "towards?|near|of")
_PREPS_SET = frozenset(_PREPS.replace("?", "").split("|")) | {"toward"}
_PARTICLES = "up|out|back|off|down|away|together|along|forward"
_INTENSE = (r"(?:(?:so|super|very|really|pretty|quite|extremely|incredibly|truly|totally|"
            r"kinda|a\s+bit|a\s+little|all|still|also|just|currently|now|finally|always|"
            r"usually|often|sometimes|even|actually)\s+)*")
_OFTEN = (r"(?:(?:usually|often|sometimes|even|both|all|only|first|probably|ever|"
          r"once|occasionally|mostly|then|later|eventually|also|always|still)\s+)*")
_GENERIC = {
    kind: re.compile(rf"{prefix}(?P<v>[a-z]+)(?:\s+(?P<pa>{_PARTICLES}))?"
                     rf"(?:\s+(?P<p>{_PREPS}))?\s+(?P<o>[^\W\d_]{_OBJ[1:]}")
    for kind, prefix in (("i", _OFTEN), ("we", _OFTEN), ("im", _INTENSE),
                         ("ive", r"(?P<been>been\s+)?"))}
MAX_GENERIC_WORDS = 5
GENERAL_TOPIC = "experiences"                # the attribute of the general rule's facts
# Verbs after "I"/"we" that start an opinion, talk about the conversation, a wish, a modal, a
# negation or a near miss rather than a fact: "I think so", "I can't wait", "I wish I had", "I
# used to", "I no longer live", "I almost bought" (adverbs in -ly are not verbs either: "I
# barely/hardly/nearly ...").
_NOT_FACT_VERBS = frozenset(
    "think thought guess know knew mean meant see saw agree hope hoped wish bet believe "
    "suppose wonder wondered understand imagine reckon can could would will should shall "
    "might must may do did does don didn doesn cant won wouldn couldn shouldn need needed "
    "want wanted used wanna gotta gonna am was were are is be been have has had get "
    "appreciate hear heard say said tell told ask asked promise recommend suggest thank "
    "totally also just really actually still always never not last your more no almost "
    "seldom".split())
# Words after "I'm" that are feelings about the other person or the talk, replies or
# negations, not facts: "I'm glad you ...", "I'm sorry to hear", "I'm sure", "I'm not".
_NOT_FACT_STATES = frozenset(
    "glad sorry happy sure not afraid here there all just so curious wondering "
    "going gonna a an the in on at with for to about from by really your more up "
    "lucky excited grateful thankful no never almost nearly barely hardly scarcely rarely "
    "seldom".split())
# Past tenses and participles that do not end in -ed (the rest do); some are also presents.
_IRREGULAR_PAST = frozenset(
    "went gone ran run made took taken got gotten found met did done gave given came began "
    "begun wrote written read drew drawn won lost felt left kept spent sent built taught "
    "brought caught sang sung swam swum ate eaten drank drunk rode ridden flew flown grew grown "
    "wore worn chose chosen held sold paid led fell fallen broke broken forgot forgotten sat "
    "stood slept hit put set cut let quit bought seen become became shot sought fought dug "
    "hung lit stuck struck spun threw thrown bit bitten hid hidden shook shaken woke woken "
    "had".split())
_PAST_LIKE_PRESENT = frozenset("read run put set cut hit let quit come become".split())
_LY_VERBS = frozenset("fly apply rely reply supply multiply bully".split())
# Verbs after which "to/at/in/from X" is a place.
_MOTION = frozenset(
    "went gone go goes going moved move moving travel travelled traveled traveling travelling "
    "live lived living grew flew fly flying drove drive driving came come coming walked walk "
    "hiked hike stayed stay staying visited visit returned return headed head".split())
# Objects that are a reply, a feeling about the talk or a vague quantity, not a thing.
_VAGUE = frozenset(
    "great good well fine okay ok alright better worse best awesome amazing cool nice bad "
    "tough hard busy tired bit little lot lots kind sort way much many more most some any "
    "same other another thing things stuff sure true right new old lucky ready excited "
    "question questions news story ton tons".split())
# An object starting with one of these is not one ("I run before work"), nor one starting
# with a verb: it is the rest of a relative clause ("the advice I got was really helpful").
_DANGLING = _PREPS_SET | _ARTICLES | frozenset("and or but your his her their some during "
                                               "like as before since until than".split())
_CLAUSE_VERBS = frozenset("was is were are has had be".split())
# An object naming the other person is about them or the talk: "I'm proud of all you did".
_YOU = frozenset("you you've you're you'd you'll your yours u ya".split())
# A modal or a form of "be" in the object starts another clause ("the cake I made was ...").
_CUT_GENERIC = _cut(_CLAUSE, _TAIL, ("is", "was", "were", "are", "did", "does", "do", "would",
                                    "could", "should", "will", "can", "might"))
# The word before a clause that makes it a hypothetical, an inverted question, an embedded
# question or reported speech: "if I had", "wish I was", "can I ask", "what I want", "said I".
_HEARSAY_WORDS = frozenset("if wish unless whether suppose imagine maybe what how why can could "
                           "should would do did will said says".split())
_HEARSAY = re.compile(rf"\b(?:{'|'.join(sorted(_HEARSAY_WORDS))})[ \t]+$")
_SENTENCE_END = re.compile(r"[.!?\x00]")


# Quotes, and line ends (NUL: see _facts_in), where a quote not closed on its line is dropped.
_QUOTE_MARK = re.compile('["“”\x00]')
# A straight quote right after a digit is inches (5'10", a 12" laptop), not a quote.
_INCHES = re.compile(r'(?<=\d)"')


def _quote_spans(low: str) -> list[tuple[int, int]]:
    """Where the quotes in ``low`` are: (opening, closing) positions, in order, not overlapping
    (a straight and a curly quote that overlap are one). A straight quote is closed by the next
    one, a "“" by the next "”", on the same line; a quote not closed on its line is a stray
    mark, not a quote, and hides nothing."""
    spans = []
    straight = curly = -1
    for mark in _QUOTE_MARK.finditer(low):
        at = mark.start()
        char = low[at]
        if char == '"':
            if straight < 0:
                straight = at
            else:
                spans.append((straight, at))
                straight = -1
        elif char == "“":
            if curly < 0:
                curly = at
        elif char == "”":
            if curly >= 0:
                spans.append((curly, at))
                curly = -1
        else:                                 # a new line: unclosed quotes were none
            straight = curly = -1
    spans.sort()
    merged = spans[:1]
    for opening, closing in spans[1:]:
        if opening < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(closing, merged[-1][1]))
        else:
            merged.append((opening, closing))
    return merged


def _third_person(verb: str) -> str:
    """The predicate word for "I <verb>": past tenses as said, present ones with -s."""
    if verb.endswith("ed") or verb in _IRREGULAR_PAST and verb not in _PAST_LIKE_PRESENT:
        return verb
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and len(verb) > 2 and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _generic(kind: str, text: str, low: str, pos: int) -> tuple[_Found | None, int]:
    """The general clause rule at ``pos`` (after the head of ``kind``): (fact or None, end)."""
    match = _GENERIC[kind].match(low, pos)
    if match is None:
        return None, pos
    verb = match.group("v")
    if kind == "im":
        if verb in _NOT_FACT_STATES:
            return None, pos
        words = ["is", verb]
    elif kind == "ive":
        if verb in _NOT_FACT_VERBS or not (
                verb.endswith(("ed", "en", "wn")) or verb in _IRREGULAR_PAST
                or match.group("been") and (verb.endswith("ing") or verb in _PREPS_SET)):
            return None, pos                  # "I have a question": not a perfect tense
        words = ["has", "been", verb] if match.group("been") else ["has", verb]
    else:
        if (verb in _NOT_FACT_VERBS or verb in _PREPS_SET
                or verb.endswith("ly") and verb not in _LY_VERBS):   # "I completely agree"
            return None, pos
        if kind == "we" and not (verb.endswith("ed") or verb in _IRREGULAR_PAST
                                 and verb not in _PAST_LIKE_PRESENT):
            return None, pos                  # "we should", "we need": only what "we" did
        words = [_third_person(verb)]
    words += [w for w in (match.group("pa"), match.group("p")) if w]
    start, end = match.span("o")
    cut = _CUT_GENERIC.search(low, start, end)
    if cut is not None:
        end = cut.start()
    object_words = text[start:end].split()
    while object_words and object_words[0].lower() in _ARTICLES:
        del object_words[0]
    del object_words[MAX_GENERIC_WORDS:]
    while object_words and object_words[-1].lower() in _DANGLING:
        del object_words[-1]
    lowered = [w.lower().replace("’", "'") for w in object_words]
    if (not lowered or lowered[0] in _STOP_FIRST or lowered[0] in _CLAUSE_VERBS
            or lowered[0] in _DANGLING or all(w.strip("'") in _VAGUE for w in lowered)
            or not _YOU.isdisjoint(lowered)):
        return None, end
    name = _capped(" ".join(object_words))
    if not name:
        return None, end
    object_type = "place" if words[-1] in ("to", "at", "in", "from", "into") and (
        verb in _MOTION or verb in _PREPS_SET) else _guess_type(name)
    return _found("_".join(words), name, object_type, GENERAL_TOPIC), end


def _facts_in(text: str) -> list[_Found]:
    """All facts in one user message, in order of appearance."""
    found: list[_Found] = []
    low = text.lower()
    if len(low) != len(text):                 # positions in low must map back to text
        low = _lower_same_length(text)
    # No rule reads across a line break: in ``low`` it is NUL, which "\s" does not match and
    # objects, names and sentences end at (same length, so positions still map back).
    if "\n" in low:
        low = low.replace("\n", "\x00")
    if "\r" in low:
        low = low.replace("\r", "\x00")
    question = "?" in low
    quotes = False
    if '"' in low:                            # inches become "″": neither quotes nor an end
        low = _INCHES.sub("″", low)
        quotes = '"' in low
    quotes = quotes or "“" in low
    spans: list[tuple[int, int]] | None = None   # the quotes, found at the first fact
    inside = 0                                # the first quote not closed before the head
    pos = 0
    while (head := _HEAD.search(low, pos)) is not None:
        pos = head.end()
        kind = head.lastgroup
        key = (kind, head.group(kind))
        rules = _PATTERNS.get(key, _UNSEEN)
        if rules is _UNSEEN:
            rules = _rules_for(*key)
        org = None
        if rules is None or (match := rules.match(low, pos)) is None:
            # No specific rule: the general clause rule.
            if kind not in _GENERIC:
                continue
            fact, end = _generic(kind, text, low, pos)
            if fact is None:
                continue
            pos = end
        else:
            group = match.lastgroup
            predicate, object_type, is_name, keyword_group = _RULE_INFO[group]
            start, end = match.span(group)
            if keyword_group is not None:     # has_<relative/pet>, favorite_<category>
                keyword = "_".join(match.group(keyword_group).replace("-", " ").split())
                keyword = _SUFFIX_ALIASES.get(keyword, keyword)
                if predicate == "has_" and keyword in _PETS_SET:
                    object_type = "pet"
                elif predicate == "favorite_":
                    object_type = _FAVORITE_TYPES.get(keyword, "thing")
                predicate += keyword
            if is_name:
                pos = start                   # only the capitalised words were the name
                name = _proper_name(text[start:end])
            else:
                name, pos = _clean(text, low, start, end, object_type, predicate)
                if pos <= start:
                    pos = start + 1
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
            fact = _FOUND_CACHE.get((predicate, name, object_type, None))
            if fact is None:
                fact = _found(predicate, name, object_type)
            if predicate in _FOLLOW_ORG:
                org = _AT_ORG.match(low, pos)
        # Nothing counts from a clause that is a hypothetical, an inverted or embedded question
        # or reported ("if I had a dog", "can I ask", "she said I"), in a sentence ending with
        # "?" ("did I tell you I went"), or quoted: someone else's words.
        at = head.start()
        if at and low[at - 1] in " \t":
            # The word before, if it is one word after one space; else the regex decides.
            word = low[low.rfind(" ", max(0, at - 12), at - 1) + 1:at - 1]
            if (word in _HEARSAY_WORDS if word.isalpha()
                    else _HEARSAY.search(low, max(0, at - 12), at) is not None):
                continue
        if question and (stop := _SENTENCE_END.search(low, head.end(), head.end() + 300)) \
                is not None and stop.group() == "?":
            continue
        if quotes:                            # heads come in order: walk the quotes once
            if spans is None:
                spans = _quote_spans(low)
            while inside < len(spans) and spans[inside][1] < at:
                inside += 1
            if inside < len(spans) and spans[inside][0] < at:
                continue
        found.append(fact)
        if org is not None:                   # "a nurse at the city hospital"
            start, end = org.span(1)
            name, pos = _clean(text, low, start, end, "organization", "works_at")
            if name:
                found.append(_found(_FOLLOW_ORG[fact[1].predicate], name, "organization"))
    return found


def extract(messages: Sequence[Message], summary: str | None = None) -> Extraction:
    """Find facts the user states about themselves, with a short summary. Pure and fast.

    Only messages with role ``"user"`` are read. See the module docstring for what is found.

    Args:
        messages: the conversation (or chunk of it), in order.
        summary: the previous chunk's summary, carried into this one's summary (or None).

    Returns:
        An :class:`~memori_nb.models.Extraction`: triples about subject ``user`` (duplicate
        facts removed, first occurrence kept), their fact strings, a summary of the facts
        found (or, with none, of the user's most frequent words), after the previous one, and
        sorted topic attributes (e.g. ``("location", "personal_preferences")``).

    Example:
        >>> from memori_nb.models import Message
        >>> result = extract([Message(role="user", content="I live in Porto and I love surfing.")])
        >>> [(t.predicate, t.object_name, t.object_type) for t in result.triples]
        [('lives_in', 'Porto', 'place'), ('likes', 'surfing', 'activity')]
        >>> result.facts
        ('user lives_in Porto', 'user likes surfing')
    """
    found: list[_Found] = []                  # each fact once, in first-seen order
    said_in: dict[str, tuple[int, ...]] = {}  # by fact, the first messages that stated it
    position = -1
    for message in messages:
        position += 1
        if message.role == "user":
            for fact in _facts_in(message.content):
                key = fact[0]
                if key not in said_in:
                    found.append(fact)
                    said_in[key] = (position,)
                else:
                    positions = said_in[key]
                    if positions[-1] != position and len(positions) < MAX_SOURCES:
                        said_in[key] = positions + (position,)
    topics = {fact[2] for fact in found}
    return Extraction(triples=tuple([fact[1] for fact in found]), facts=tuple(said_in),
                      summary=_summarize(messages, found, GENERAL_TOPIC in topics, summary),
                      attributes=tuple(sorted(topics)), sources=tuple(said_in.items()))


# Words that say nothing about what a conversation was about, for the summary of one with no
# facts: greetings, thanks, fillers, and common verbs and adjectives of chat.
_CHAT_WORDS = frozenset("""
about after again also always anything around back because been before being could does
doing done down even ever every from going gonna good great have having here hey hello
into just know like little look looks lots made make many maybe more most much need never
nice only other over really right said same should some something sound sounds still sure
take than thank thanks that their them then there these they thing things think this those
through time today very want well were what when where which while will with would yeah
your yours awesome amazing glad happy love cool okay wow totally definitely though
""".split())
_SUMMARY_WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W\d_]")
MAX_TOPIC_WORDS = 5
MAX_TOPIC_SCAN = 20_000                     # characters of user text read for topic words


def _summarize(messages: Sequence[Message], found: list[_Found], general: bool,
               previous: str | None) -> str:
    """Deterministic summary of what was found, after the previous chunk's summary.

    With facts: the facts as a sentence ("User owns Tesla Model 3; lives in Denver."), those
    of the specific rules before the general clause rule's (``general``: there are some), as
    many as fit, then how many more. Without: the user's most frequent content words (ties in
    order of appearance), said to be no more than that.
    """
    if found:
        if general:                           # specific facts first, each in found order
            found = [fact for fact in found if fact[2] != GENERAL_TOPIC] + [
                fact for fact in found if fact[2] == GENERAL_TOPIC]
        parts = [fact[3] for fact in found]
        text = "; ".join(parts)
        if len(text) <= MAX_TOPIC_CHARS:      # all fit (the usual case)
            text = f"User {text}."
        else:                                 # as many as fit, at least one
            used = len(parts[0]) + 2
            kept = 1
            while kept < len(parts) and used + len(parts[kept]) <= MAX_TOPIC_CHARS:
                used += len(parts[kept]) + 2
                kept += 1
            more = len(parts) - kept
            text = "User " + "; ".join(parts[:kept]) + (
                f"; and {more} more facts." if more > 1 else "; and 1 more fact." if more else ".")
    else:
        counts: dict[str, int] = {}
        seen = 0
        users = 0
        for message in messages:
            if message.role != "user":
                continue
            users += 1
            text = message.content
            for word in _SUMMARY_WORD.findall(text[:MAX_TOPIC_SCAN - seen].lower()):
                if len(word) > 3 and word not in _CHAT_WORDS and "'" not in word:
                    counts[word] = counts.get(word, 0) + 1
            seen += len(text)
            if seen >= MAX_TOPIC_SCAN:
                break
        top = sorted(counts, key=lambda w: -counts[w])[:MAX_TOPIC_WORDS]   # stable: ties
        text = ("No facts found; the user's most frequent words: " + ", ".join(top) + "."
                if top else "No facts found." if users else "No user messages.")
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
    # Its answers are made of the messages' own words, each fact once (see the protocol).
    clean_answers = True

    async def augment(self, request: AugmentationRequest) -> Extraction:
        """Extract facts from ``request.messages``, carrying ``request.summary`` over."""
        return extract(request.messages, request.summary)

    async def aclose(self) -> None:
        """Nothing to close; here for the backend interface."""

    def __repr__(self) -> str:
        return "LocalBackend()"
