"""The curated public API: what ``from memori_nb import *`` gives, kept sorted."""

import memori_nb


def test_all_is_sorted_and_importable():
    assert memori_nb.__all__ == sorted(memori_nb.__all__)
    for name in memori_nb.__all__:
        assert getattr(memori_nb, name) is not None


def test_seeding_interface_names_are_public():
    for name in ("Memori", "SeedData", "SeedConfig", "SeedResult", "ConversationResult"):
        assert name in memori_nb.__all__
