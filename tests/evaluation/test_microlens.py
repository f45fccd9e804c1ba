import os
from pathlib import Path

import pytest

from recommend.evaluation.microlens import MicroLensFormatError, read_microlens

REPO_ROOT = Path(__file__).resolve().parents[2]
MICROLENS_DIR = (REPO_ROOT / os.environ.get("RECSYS_DATA_DIR", "../shared/data")).resolve() / "microlens-50k"

PAIRS = "MicroLens-50k_pairs.tsv"
TITLES = "MicroLens-50k_titles.csv"


def _write(directory: Path, pairs: str, titles: str | None = 'item,title\n5,"Five, with a comma"\n9,Nine\n12,Twelve\n'):
    (directory / PAIRS).write_text(pairs, encoding="utf-8", newline="")
    if titles is not None:
        (directory / TITLES).write_text(titles, encoding="utf-8")


def test_read_maps_ids_to_indices(tmp_path):
    # given: CRLF line endings, as in the released file
    _write(tmp_path, "7\t9 5 12\r\n3\t12 9\r\n")

    # when
    data = read_microlens(tmp_path)

    # then
    assert data.user_ids == [7, 3]
    assert data.item_ids == [5, 9, 12]
    assert [sequence.tolist() for sequence in data.sequences] == [[1, 0, 2], [2, 1]]
    assert data.titles[5] == "Five, with a comma"
    assert data.n_interactions == 5


def test_read_includes_untitled_and_uninteracted_items(tmp_path):
    _write(tmp_path, "1\t5 40\n")

    data = read_microlens(tmp_path)

    assert data.item_ids == [5, 9, 12, 40]


def test_read_without_titles_when_allowed(tmp_path):
    _write(tmp_path, "1\t5\n", titles=None)

    data = read_microlens(tmp_path, require_titles=False)

    assert data.titles == {}


def test_read_rejects_missing_titles(tmp_path):
    _write(tmp_path, "1\t5\n", titles=None)

    with pytest.raises(MicroLensFormatError, match="MicroLens-50k_titles.csv not found"):
        read_microlens(tmp_path)


def test_read_rejects_missing_pairs(tmp_path):
    with pytest.raises(MicroLensFormatError, match="MicroLens-50k_pairs.tsv not found"):
        read_microlens(tmp_path)


def test_read_rejects_line_without_tab(tmp_path):
    _write(tmp_path, "1\t5 9\n2 5 9\n")

    with pytest.raises(MicroLensFormatError, match="line 2: expected 'user<TAB>item item ...'"):
        read_microlens(tmp_path)


def test_read_rejects_non_integer_item(tmp_path):
    _write(tmp_path, "1\t5 x9\n")

    with pytest.raises(MicroLensFormatError, match="line 1: invalid item id 'x9'"):
        read_microlens(tmp_path)


def test_read_rejects_duplicate_user(tmp_path):
    _write(tmp_path, "1\t5\n1\t9\n")

    with pytest.raises(MicroLensFormatError, match="line 2: user 1 appears on more than one line"):
        read_microlens(tmp_path)


def test_read_rejects_bad_titles_header(tmp_path):
    _write(tmp_path, "1\t5\n", titles="id,name\n5,Five\n")

    with pytest.raises(MicroLensFormatError, match="expected the header 'item,title'"):
        read_microlens(tmp_path)


@pytest.mark.skipif(not (MICROLENS_DIR / PAIRS).is_file(), reason=f"MicroLens-50k not found under {MICROLENS_DIR}")
def test_read_real_microlens_counts():
    data = read_microlens(MICROLENS_DIR)

    assert data.n_users == 50_000
    assert data.n_items == 19_220
    assert data.n_interactions == 359_708
    assert len(data.titles) == 19_220
