"""The pair-count experiment on the hand-made Jira reports: counts checked by hand."""
from pathlib import Path

import numpy as np
import pytest

from qis_lib.embedders import HashEmbedder
from qis_lib.experiments.quadratic import growth_exponent, paths_table, replay
from qis_lib.infra.datasets import load_gitbugs

JIRA = Path(__file__).parent / "fixtures" / "gitbugs_mini" / "jira"


def test_counts_on_a_small_replay():
    ds = load_gitbugs(JIRA)
    vectors = HashEmbedder().encode([p.problem_description for p in ds.packets])
    replayed = replay(ds.packets, vectors, ds.duplicate_pairs, top_k=10)
    n = len(ds.packets)
    table = paths_table(replayed, ds.duplicate_pairs, [1, n], top_k=10)
    assert table["possible_pairs"].tolist() == [0, n * (n - 1) // 2]
    assert table["duplicate_pairs"].tolist() == [0, len(ds.duplicate_pairs)]
    # top 10 of at most 8 earlier reports holds every earlier report: every duplicate pair is a useful route
    later = {b for _, b in ds.duplicate_pairs}
    assert table["useful_routes"].tolist() == [0, len(later)]
    assert table["routes_any_hit"].tolist() == [0, n - 1]
    with pytest.raises(ValueError, match="N must be between"):
        paths_table(replayed, ds.duplicate_pairs, [n + 1])


def test_growth_exponent():
    import pandas as pd

    sizes = np.array([10, 100, 1000])
    table = pd.DataFrame({"N": sizes, "quad": sizes * (sizes - 1) / 2, "lin": 3 * sizes, "none": [0, 0, 1]})
    assert growth_exponent(table, "quad") == pytest.approx(2.0, abs=0.05)
    assert growth_exponent(table, "lin") == pytest.approx(1.0)
    assert np.isnan(growth_exponent(table, "none"))
