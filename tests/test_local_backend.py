"""The offline ``local`` backend: which sentences give which facts, and what it ignores."""

from __future__ import annotations

import asyncio
import json
import re
from importlib.resources import files
from pathlib import Path
from random import Random

import pytest

from memori_nb.backends.base import AugmentationBackend, AugmentationRequest
from memori_nb.backends.local import LocalBackend, extract
from memori_nb.models import Extraction, Message, Triple, storable

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


def user(*contents: str) -> list[Message]:
    return [Message(role="user", content=content) for content in contents]


def triples_of(*contents: str) -> list[tuple[str, str, str]]:
    """(predicate, object, object type) for each triple found in the user messages."""
    return [(t.predicate, t.object_name, t.object_type) for t in extract(user(*contents)).triples]


@pytest.mark.parametrize(("sentence", "expected"), [
    ("I just bought a Tesla Model 3!", ("owns", "Tesla Model 3", "product")),
    ("I own a small sailboat.", ("owns", "small sailboat", "product")),
    ("I drive a 2015 Honda Civic.", ("drives", "2015 Honda Civic", "product")),
    ("I have a dog named Biscuit.", ("has_dog", "Biscuit", "pet")),
    ("My cat, Miso, is three.", ("has_cat", "Miso", "pet")),
    ("I've got two cats.", ("has_pet", "two cats", "pet")),
    ("I really love hiking in the mountains.", ("likes", "hiking", "activity")),
    ("I like to cook.", ("likes", "to cook", "activity")),
    ("I enjoy sushi.", ("likes", "sushi", "food")),
    ("I prefer tea over coffee.", ("prefers", "tea over coffee", "food")),
    ("I hate traffic.", ("dislikes", "traffic", "thing")),
    ("I don't like horror movies.", ("dislikes", "horror movies", "thing")),
    ("My favorite food is ramen.", ("favorite_food", "ramen", "food")),
    ("I'm a big fan of jazz.", ("likes", "jazz", "thing")),
    ("I play tennis on weekends.", ("plays", "tennis", "activity")),
    ("I live in Denver.", ("lives_in", "Denver", "place")),
    ("I'm from Porto.", ("is_from", "Porto", "place")),
    ("I moved to Lisbon in 2019.", ("moved_to", "Lisbon", "place")),
    ("I work at Globex Corporation since 2019.", ("works_at", "Globex Corporation",
                                                   "organization")),
    ("I work as a nurse.", ("works_as", "nurse", "occupation")),
    ("I'm a software engineer.", ("works_as", "software engineer", "occupation")),
    ("My wife Anna is a doctor.", ("has_wife", "Anna", "person")),
    ("My sister's name is Li.", ("has_sister", "Li", "person")),
    ("My mom is called Rosa.", ("has_mother", "Rosa", "person")),
    ("I have two kids.", ("has_children", "two kids", "person")),
    ("I'm planning to run a half marathon.", ("plans_to", "run a half marathon", "activity")),
    ("I plan to learn Spanish.", ("plans_to", "learn Spanish", "activity")),
    ("I'm going to Montreal for reading week.", ("plans_to_go_to", "Montreal", "place")),
    ("I'm planning a trip to Kyoto.", ("is_planning", "trip to Kyoto", "event")),
    ("My name is Ben Carter.", ("is_named", "Ben Carter", "person")),
    ("Please call me Ben.", ("is_named", "Ben", "person")),
    ("I'm allergic to peanuts.", ("is_allergic_to", "peanuts", "allergen")),
    ("I have a severe peanut allergy.", ("is_allergic_to", "peanut", "allergen")),
    ("I'm vegetarian.", ("follows_diet", "vegetarian", "diet")),
    ("I don't eat pork.", ("avoids_eating", "pork", "food")),
    ("I study computer science.", ("studies", "computer science", "topic")),
    ("I'm learning German.", ("is_learning", "German", "topic")),
])
def test_sentence_gives_triple(sentence, expected):
    assert triples_of(sentence) == [expected]


def test_triples_are_about_the_user_and_facts_read_as_sentences():
    result = extract(user("I live in Porto and I love surfing."))
    assert all(isinstance(t, Triple) for t in result.triples)
    assert {(t.subject_name, t.subject_type) for t in result.triples} == {("user", "person")}
    assert result.facts == ("user lives_in Porto", "user likes surfing")
    assert result.facts == tuple(t.fact for t in result.triples)


def test_job_and_study_details_give_a_second_fact():
    assert triples_of("I'm a software engineer at Stripe.") == [
        ("works_as", "software engineer", "occupation"),
        ("works_at", "Stripe", "organization")]
    assert triples_of("I study computer science at MIT.") == [
        ("studies", "computer science", "topic"), ("studies_at", "MIT", "organization")]


def test_objects_are_cut_at_the_end_of_their_clause():
    assert triples_of("I just bought a Tesla Model 3 and it drives like a dream") == [
        ("owns", "Tesla Model 3", "product")]
    assert triples_of("I love pizza but my wife hates it") == [("likes", "pizza", "food")]
    assert triples_of("I live in Portland, Oregon.") == [("lives_in", "Portland", "place")]
    assert triples_of("I moved to Denver last year because of work") == [
        ("moved_to", "Denver", "place")]
    assert triples_of("I'm allergic to cats so I can't visit") == [
        ("is_allergic_to", "cats", "allergen")]


def test_several_facts_in_one_message_are_all_found_in_order():
    assert triples_of("My wife Anna and I moved to Denver, and I work at Intel.") == [
        ("has_wife", "Anna", "person"), ("moved_to", "Denver", "place"),
        ("works_at", "Intel", "organization")]


def test_objects_are_capped_in_length():
    long_thing = " ".join(["very-long-word"] * 20)
    (triple,) = extract(user(f"I own {long_thing}")).triples
    assert len(triple.object_name) <= 60
    assert triple.object_name.startswith("very-long-word")


@pytest.mark.parametrize("sentence", [
    "I’m from Porto.", "I'm from Porto.", "I am from Porto.", "Im from Porto", "i'm from Porto",
    "I`m from Porto.",
])
def test_contractions_and_curly_apostrophes(sentence):
    assert triples_of(sentence) == [("is_from", "Porto", "place")]


def test_curly_apostrophe_in_other_contractions():
    assert triples_of("I’ve got two cats.") == [("has_pet", "two cats", "pet")]
    assert triples_of("I don’t like cilantro.") == [("dislikes", "cilantro", "food")]
    assert triples_of("My sister’s name is Li.") == [("has_sister", "Li", "person")]


def test_verbs_match_in_any_case_and_objects_keep_their_casing():
    assert triples_of("I LOVE New York") == [("likes", "New York", "thing")]
    assert triples_of("i live in berlin") == [("lives_in", "berlin", "place")]


@pytest.mark.parametrize("sentence", [
    "I like it.", "I love you!", "I'd like to book a table.", "I would love a refund.",
    "I'm not from here.", "I used to live in Paris.", "I have a question about my order.",
    "my wife is a doctor.", "We live in Chicago.",
    "Can you help me reset my password?", "Thanks, that was really helpful!",
    "Call me back later.", "",
])
def test_no_fact_where_there_is_none(sentence):
    assert triples_of(sentence) == []


@pytest.mark.parametrize(("sentence", "expected"), [
    ("I went to a support group yesterday.", ("went_to", "support group", "place")),
    ("I went to a LGBTQ support group yesterday and it was so powerful.",
     ("went_to", "LGBTQ support group", "place")),
    ("I'm swamped with the kids & work.", ("is_swamped_with", "kids & work", "thing")),
    ("I painted that lake sunrise last year.", ("painted", "lake sunrise", "thing")),
    ("I paint landscapes.", ("paints", "landscapes", "thing")),
    ("I ran a charity race for mental health last Saturday.",
     ("ran", "charity race for mental health", "thing")),
    ("I usually go hiking on weekends.", ("goes", "hiking", "activity")),
    ("I volunteer at the animal shelter.", ("volunteers_at", "animal shelter", "thing")),
    ("I drive to work.", ("drives_to", "work", "place")),            # not a possession
    ("I'm a bit confused about my bill.", ("is_confused_about", "bill", "thing")),
    ("I'm looking forward to the concert.", ("is_looking_forward_to", "concert", "thing")),
    ("I'm thinking about going back to school.",
     ("is_thinking_about", "going back to school", "activity")),
    ("I've been volunteering at a shelter.", ("has_been_volunteering_at", "shelter", "thing")),
    ("I've been to Japan twice.", ("has_been_to", "Japan", "place")),
    ("I’ve started taking pottery classes.", ("has_started", "taking pottery classes",
                                              "activity")),
    ("We went camping last week.", ("went", "camping", "activity")),
    ("We adopted a rescue greyhound.", ("adopted", "rescue greyhound", "thing")),
    ("When I was a kid, I loved drawing.", ("loved", "drawing", "activity")),
])
def test_general_clause_rule(sentence, expected):
    triples = extract(user(sentence)).triples
    assert [(t.predicate, t.object_name, t.object_type) for t in triples] == [expected]
    assert extract(user(sentence)).attributes == ("experiences",)


def test_general_rule_objects_are_short_and_end_with_their_clause():
    assert triples_of("I started a new job at the bakery last month because I needed it.") == [
        ("started", "new job at the bakery", "thing")]
    (triple,) = extract(user("I built a tiny wooden cabin by the lake near my parents' old "
                             "farm in the hills.")).triples
    assert len(triple.object_name.split()) <= 5
    assert triple.object_name.startswith("tiny wooden cabin")
    assert triples_of("The advice I got was really helpful.") == []


@pytest.mark.parametrize("sentence", [
    # opinions, agreement, talk about the conversation
    "I think so.", "I guess you're right.", "I agree with you.", "I know what you mean.",
    "I see.", "I mean, it was fine.", "I bet you did!", "I completely agree.",
    "Thanks! I really appreciate it.", "I totally get that.",
    # wishes, hopes, things not done
    "I can't wait to see it!", "I hope you have a great day.", "I wish I had a dog.",
    "I want a new bike.", "I never went to Paris.", "We should get coffee sometime.",
    # feelings about the other person, replies
    "I'm so glad for you!", "I'm sorry to hear that.", "I'm happy for you!", "I'm not sure.",
    "I'm so proud of all you've achieved!", "I'm excited to see you!", "I'm doing great, thanks!",
    # hypotheticals, questions, quotes: not even the specific rules fire
    "If I had a dog, I'd walk it daily.", "If I have a dog named Rex, he'll be spoiled.",
    "Maybe I should try yoga.", "Did I tell you I went to Paris?",
    "Do you think I should move to Berlin?", "What if I moved to Lisbon",
    'She said "I went to Paris" to everyone.', "He wrote “I live in Rome” on the card.",
])
def test_conversational_noise_gives_nothing(sentence):
    assert triples_of(sentence) == []


def test_quotes_only_hide_what_is_inside_them():
    assert triples_of('She said "I went to Paris" but I went to Rome.') == [
        ("went_to", "Rome", "place")]
    assert triples_of("He wrote “I painted a barn” and I painted a boat.") == [
        ("painted", "boat", "thing")]


def test_quotes_are_closed_on_their_line_and_inch_marks_are_not_quotes():
    # A " after a digit is inches; a quote not closed on its line is a stray mark: neither
    # hides the rest of the message.
    assert triples_of('I\'m 5\'10" tall. I live in Paris and I love cats.') == [
        ("lives_in", "Paris", "place"), ("likes", "cats", "thing")]
    assert triples_of('I own a 12" laptop. I live in Oslo.') == [
        ("owns", '12" laptop', "product"), ("lives_in", "Oslo", "place")]
    assert triples_of('She said "hi. I live in Paris. I love cats.') == [
        ("lives_in", "Paris", "place"), ("likes", "cats", "thing")]
    assert triples_of('He wrote "hi\nI live in Oslo" on it') == [("lives_in", "Oslo", "place")]
    assert triples_of("He said “hi. I love dogs.") == [("likes", "dogs", "thing")]
    # A quote closed on its line hides all it holds, several sentences too, and no more.
    assert triples_of('She said "I\'m tired. I live in Rome." I love cats.') == [
        ("likes", "cats", "thing")]
    assert triples_of("He said “I live in Rome. I love cats.” I love dogs.") == [
        ("likes", "dogs", "thing")]
    assert triples_of('I\'m 6\'2" and she said "I live in Rome" but I live in Denver.') == [
        ("lives_in", "Denver", "place")]
    # Overlapping straight and curly quotes hide what either holds.
    assert triples_of('He said “a "b” I live in Rome" and I love cats.') == [
        ("likes", "cats", "thing")]
    assert triples_of('“I love "x" and I live in Rome” I love dogs.') == [
        ("likes", "dogs", "thing")]


@pytest.mark.parametrize("sentence", [
    "I no longer live in Paris.", "I almost bought a Tesla.", "I nearly moved to Rome.",
    "I barely know Python.", "I hardly ever play chess.", "I never really liked sushi.",
    "I'm no longer vegetarian.", "I'm almost done with my thesis.", "I'm hardly a fan of jazz.",
    "We almost went camping.", "We never went camping.", "I've never been to Japan.",
])
def test_negations_and_near_misses_give_nothing(sentence):
    assert triples_of(sentence) == []


def test_negations_and_near_misses_hide_only_their_own_clause():
    assert triples_of("I never eat pork.") == [("avoids_eating", "pork", "food")]
    assert triples_of("I no longer eat meat.") == [("avoids_eating", "meat", "food")]
    assert triples_of("I live in Oslo and I almost missed the bus.") == [
        ("lives_in", "Oslo", "place")]
    assert triples_of("I almost bought a Tesla, but I bought a Volvo.") == [
        ("owns", "Volvo", "product")]


def test_no_rule_reads_across_a_line_break():
    assert triples_of("I live in\nI love cats") == [("likes", "cats", "thing")]
    assert triples_of("I live in\r\nI love cats") == [("likes", "cats", "thing")]
    assert triples_of("I love\ncats") == []
    assert triples_of("My sister's name is\nAnna") == []
    assert triples_of("I went to\nthe gym") == []
    assert triples_of("I work as a nurse\nat the city hospital") == [
        ("works_as", "nurse", "occupation")]
    # Each line on its own still gives its facts.
    assert triples_of("I live in Paris\r\nI love cats\nmy dog Rex") == [
        ("lives_in", "Paris", "place"), ("likes", "cats", "thing"), ("has_dog", "Rex", "pet")]


def test_assistant_and_system_text_is_ignored():
    messages = [
        Message(role="system", content="I live in the cloud and I love helping."),
        Message(role="user", content="What should I cook tonight?"),
        Message(role="assistant", content="I love pasta, and I live in Rome!"),
    ]
    result = extract(messages)
    assert result.triples == ()
    assert result.facts == ()


def test_duplicate_facts_are_kept_once_in_first_seen_order():
    result = extract(user("I love hiking.", "I live in Denver.", "I love hiking!"))
    assert result.facts == ("user likes hiking", "user lives_in Denver")
    assert len(result.triples) == 2


def test_same_input_gives_the_same_output():
    messages = user("I just bought a Tesla Model 3!", "My dog Rex loves it.")
    assert extract(messages) == extract(list(messages)) == extract(tuple(messages))


def test_summary_is_made_of_the_facts_found():
    messages = [Message(role="assistant", content="Hello!"),
                *user("I just bought a Tesla Model 3!", "I live in Lisbon.", "I love hiking.")]
    assert extract(messages).summary == "User owns Tesla Model 3; lives in Lisbon; likes hiking."


def test_summary_puts_specific_facts_first_and_counts_what_does_not_fit():
    summary = extract(user("I painted a lake sunrise.", "I live in Lisbon.")).summary
    assert summary == "User lives in Lisbon; painted lake sunrise."
    many = extract(user(*(f"I visited city number {n}." for n in range(30)))).summary
    assert many.startswith("User visited city number 0; visited city number 1;")
    assert many.endswith(" more facts.") and len(many) < 200


def test_summary_without_facts_names_the_most_frequent_words():
    summary = extract(user("Hey! How was the weekend? Did the garden survive the storm?",
                           "The storm flattened the tomatoes, the garden is a mess.",
                           "Tomatoes again next year, storm or not.")).summary
    assert summary == ("No facts found; the user's most frequent words: storm, garden, "
                       "tomatoes, weekend, survive.")
    assert extract(user("ok", "lol")).summary == "No facts found."
    assert extract([Message(role="assistant", content="Hi")]).summary == "No user messages."


def test_summary_of_a_long_message_is_short_and_not_its_beginning():
    text = "Here is the log you asked for: " + "error timeout retry " * 5000
    summary = extract(user(text)).summary
    assert summary == ("No facts found; the user's most frequent words: error, timeout, "
                       "retry, asked.")
    assert "Here is" not in summary


def test_summary_carries_the_previous_chunk_over_and_stays_short():
    first = extract(user("I live in Denver."))
    second = extract(user("I love hiking."), summary=first.summary)
    assert second.summary == "User lives in Denver. | User likes hiking."
    summary = second.summary
    for _ in range(20):                       # a long chain of chunks stays bounded
        summary = extract(user("I love hiking."), summary=summary).summary
        assert len(summary) <= 300
    assert summary.endswith(" | User likes hiking.")


def test_attributes_name_the_topics_found_sorted():
    result = extract(user("I live in Denver and I work at Intel.", "I love hiking."))
    assert result.attributes == ("location", "personal_preferences", "work")
    assert extract(user("Hello there")).attributes == ()


def load_sample() -> list[dict]:
    text = (files("memori_nb") / "data" / "sample_conversations.json").read_text("utf-8")
    return json.loads(text)


def test_sample_file_is_a_valid_seed_list_for_three_users():
    data = load_sample()
    assert [entity["entity_id"] for entity in data] == ["user-ana", "user-ben", "user-chen"]
    for entity in data:
        conversations = entity["conversations"]
        assert 10 <= len(conversations) <= 14
        ids = [conversation["id"] for conversation in conversations]
        assert len(set(ids)) == len(ids)
        for conversation in conversations:
            messages = conversation["messages"]
            assert 2 <= len(messages) <= 12
            assert {m["role"] for m in messages} <= {"user", "assistant", "system"}
            stamps = [m["timestamp"] for m in messages]
            assert stamps == sorted(stamps)


@pytest.mark.parametrize(("entity_id", "minimum", "must_have"), [
    ("user-ana", 15, {"user lives_in Lisbon", "user has_cat Miso", "user follows_diet vegetarian"}),
    ("user-ben", 15, {"user owns Tesla Model 3", "user has_dog Biscuit", "user lives_in Denver"}),
    ("user-chen", 12, {"user studies computer science", "user has_hamster Dumpling",
                       "user is_from Chengdu"}),
])
def test_extractor_finds_facts_in_the_sample(entity_id, minimum, must_have):
    (entity,) = [e for e in load_sample() if e["entity_id"] == entity_id]
    facts = set()
    for conversation in entity["conversations"]:
        messages = [Message(role=m["role"], content=m["content"], timestamp=m["timestamp"])
                    for m in conversation["messages"]]
        facts.update(extract(messages).facts)
    assert len(facts) >= minimum
    assert must_have <= facts


def test_local_backend_augments_a_request_offline():
    backend = LocalBackend()
    assert isinstance(backend, AugmentationBackend)
    assert backend.name == "local" and backend.requires_network is False
    assert repr(backend) == "LocalBackend()"
    request = AugmentationRequest(
        entity_id="user-ben", conversation_id="c1", summary="Earlier chunk.",
        messages=(Message(role="user", content="I just bought a Tesla Model 3!"),
                  Message(role="assistant", content="Congratulations!")))

    async def run() -> Extraction:
        try:
            return await backend.augment(request)
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    assert result.facts == ("user owns Tesla Model 3",)
    assert result.summary == "Earlier chunk. | User owns Tesla Model 3."
    assert result == extract(request.messages, request.summary)


def assert_clean(answer: Extraction) -> None:
    """What LocalBackend.clean_answers promises: each triple, fact and attribute once, and
    no text a store cannot hold."""
    for values in (answer.triples, answer.facts, answer.attributes):
        assert len(set(values)) == len(values)
    texts = [answer.summary, *answer.facts, *answer.attributes,
             *(text for t in answer.triples for text in (
                 t.subject_name, t.subject_type, t.predicate, t.object_name, t.object_type))]
    assert all(storable(text) for text in texts)


def test_answers_are_as_clean_as_the_backend_says():
    """LocalBackend.clean_answers lets the engine skip its checks of the answers."""
    assert LocalBackend.clean_answers
    rng = Random(5)
    sentences = ["I live in Denver.", "I live in denver!", "I LOVE hiking.", "I love hiking",
                 "I work at Globex Corporation.", "My sister's name is Li.", "I'm from Porto.",
                 "I have a dog named Biscuit and a cat named Miso.", "I enjoy sushi 🍣.",
                 "I moved to São Paulo.", "I study 日本語 at night.", "I'm a nurse at Mercy.",
                 "My favorite food is ramen. My favorite food is ramen.", "ok", "\n\n"]
    for _ in range(300):
        messages = [Message(role=rng.choice(["user", "user", "assistant"]),
                            content=" ".join(rng.choices(sentences, k=rng.randint(1, 4))))
                    for _ in range(rng.randint(1, 8))]
        assert_clean(extract(messages, rng.choice([None, "an earlier summary"])))


@pytest.mark.skipif(not LOCOMO.exists(), reason="../shared/data/locomo is not here")
def test_answers_on_real_chat_history_are_clean():
    """The same promise on LoCoMo's sessions, seeded from each speaker's view."""
    for sample in json.loads(LOCOMO.read_text()):
        talk = sample["conversation"]
        for me in (talk["speaker_a"], talk["speaker_b"]):
            for key in (k for k in talk if re.fullmatch(r"session_\d+", k)):
                assert_clean(extract([
                    Message(role="user" if turn["speaker"] == me else "assistant",
                            content=turn["text"]) for turn in talk[key]]))
