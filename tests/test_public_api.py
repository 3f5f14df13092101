"""The curated public API: what ``from memori_nb import *`` gives, kept sorted."""

import memori_nb


def test_all_is_sorted_and_importable():
    assert memori_nb.__all__ == sorted(memori_nb.__all__)
    for name in memori_nb.__all__:
        assert getattr(memori_nb, name) is not None


def test_seeding_interface_names_are_public():
    for name in ("Memori", "SeedData", "SeedConfig", "SeedResult", "ConversationResult"):
        assert name in memori_nb.__all__


def test_seed_distributed_is_public_and_dask_stays_unimported():
    import subprocess
    import sys

    assert "seed_distributed" in memori_nb.__all__
    code = ("import sys, memori_nb; print(any(m == 'dask' or m.startswith(('dask.', "
            "'distributed')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"  # Dask is imported when a backfill runs, not before
