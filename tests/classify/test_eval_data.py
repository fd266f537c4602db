"""``eval classify`` data: one folder per label, a reproducible split, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.errors import InvalidInput
from appliance.review.classification_eval import Labelled, load_folders, route_report, split
from appliance.review.labelling import Thresholds


def folders(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{i}.txt").write_text(f"{label} text number {i}", encoding="utf-8")
    return root


def test_folders_become_labelled_texts_and_blank_files_are_left_out(tmp_path: Path) -> None:
    data = folders(tmp_path / "data", {"fresh": 3, "rotten": 2})
    (data / "fresh" / "blank.txt").write_text("  \n", encoding="utf-8")
    (data / "fresh" / "notes.md").write_text("not a .txt", encoding="utf-8")
    (data / ".hidden").mkdir()
    (data / ".hidden" / "x.txt").write_text("ignored", encoding="utf-8")
    items = load_folders(data)
    assert [(i.label, i.text) for i in items][:2] == [
        ("fresh", "fresh text number 0"),
        ("fresh", "fresh text number 1"),
    ]
    assert sorted({i.label for i in items}) == ["fresh", "rotten"] and len(items) == 5


@pytest.mark.parametrize(
    ("counts", "detail"),
    [({"fresh": 4}, "needs at least two label folders"), ({"a": 0, "b": 0}, "two label folders")],
)
def test_data_with_fewer_than_two_labels_is_refused(
    tmp_path: Path, counts: dict[str, int], detail: str
) -> None:
    with pytest.raises(InvalidInput, match=detail):
        load_folders(folders(tmp_path / "data", counts))


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a folder"):
        load_folders(tmp_path / "nowhere")


def test_the_split_is_reproducible_and_disjoint() -> None:
    items = [Labelled(lab, f"{lab}{i}") for lab in ("a", "b") for i in range(20)]
    train, stream, test = split(items, 5, seed=3)
    assert split(items, 5, seed=3) == (train, stream, test)
    assert split(items, 5, seed=4) != (train, stream, test)
    assert [len(p) for p in (train, stream, test)] == [10, 14, 16]
    texts = [i.text for i in train + stream + test]
    assert len(set(texts)) == 40
    assert sum(i.label == "a" for i in train) == 5


def test_a_label_with_too_few_texts_for_the_split_is_refused() -> None:
    items = [Labelled("a", f"a{i}") for i in range(20)] + [Labelled("b", f"b{i}") for i in range(6)]
    with pytest.raises(InvalidInput, match="label 'b' has 6 texts: need > 6"):
        split(items, 5, seed=0)


def test_route_report_counts_each_band() -> None:
    p = np.array([[0.99, 0.01], [0.97, 0.03], [0.1, 0.9], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    report = route_report(p, y, Thresholds())
    assert report == {
        "auto": {"coverage": 0.5, "precision": 0.5},
        "review": {"coverage": 0.25, "precision": 1.0},
        "human": {"coverage": 0.25, "precision": 1.0},
    }
