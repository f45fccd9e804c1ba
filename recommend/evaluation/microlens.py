"""Load the MicroLens-50k interaction sequences and item titles.

MicroLens (Ni et al., "A Content-Driven Micro-Video Recommendation Dataset at Scale",
2023) ships ``MicroLens-50k_pairs.tsv`` with one user per line,
``user<TAB>item item ...`` in interaction order (oldest first), and
``MicroLens-50k_titles.csv`` with ``item,title``.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MicroLensData", "MicroLensFormatError", "read_microlens"]

logger = logging.getLogger(__name__)

PAIRS_FILENAME = "MicroLens-50k_pairs.tsv"
TITLES_FILENAME = "MicroLens-50k_titles.csv"


class MicroLensFormatError(ValueError):
    """A MicroLens file that is missing or has a malformed line."""


@dataclass(frozen=True)
class MicroLensData:
    """MicroLens interactions with users and items mapped to dense 0-based indices.

    ``user_ids[u]`` and ``item_ids[i]`` are the raw ids of user index u and item index
    i. Item indices follow ascending raw id over every item in the pairs or titles file.
    ``sequences[u]`` contains user u's item indices, oldest first, as an int64 array.
    ``titles`` maps raw item id to title.
    """

    user_ids: list[int]
    item_ids: list[int]
    sequences: list[np.ndarray]
    titles: dict[int, str]
    item_index: dict[int, int] = field(repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(sequence) for sequence in self.sequences))


def _parse_id(text: str, kind: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise MicroLensFormatError(f"{path}, line {line}: invalid {kind} id {text!r}; expected an integer") from None


def _read_pairs(path: Path) -> list[tuple[int, list[int]]]:
    users: list[tuple[int, list[int]]] = []
    seen_users: set[int] = set()
    # newline="" keeps "\r\n" intact, so the strip below handles CRLF and LF files alike.
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise MicroLensFormatError(
                    f"{path}, line {line_number}: expected 'user<TAB>item item ...' with one tab; "
                    f"found {len(parts) - 1} tabs"
                )
            user_id = _parse_id(parts[0].strip(), "user", path, line_number)
            if user_id in seen_users:
                raise MicroLensFormatError(f"{path}, line {line_number}: user {user_id} appears on more than one line")
            seen_users.add(user_id)
            items = [_parse_id(token, "item", path, line_number) for token in parts[1].split()]
            if not items:
                raise MicroLensFormatError(f"{path}, line {line_number}: user {user_id} has no items")
            users.append((user_id, items))
    return users


def _read_titles(path: Path) -> dict[int, str]:
    titles: dict[int, str] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [column.strip() for column in header] != ["item", "title"]:
            raise MicroLensFormatError(f"{path}: expected the header 'item,title'; found {header}")
        for row in reader:
            line_number = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise MicroLensFormatError(
                    f"{path}, line {line_number}: expected 2 columns (item, title); found {len(row)}"
                )
            item_id = _parse_id(row[0].strip(), "item", path, line_number)
            if item_id in titles:
                raise MicroLensFormatError(f"{path}, line {line_number}: duplicate item {item_id}")
            titles[item_id] = row[1]
    return titles


def read_microlens(directory: str | os.PathLike[str], *, require_titles: bool = True) -> MicroLensData:
    """Read MicroLens-50k from ``directory`` and index its users and items.

    Raises MicroLensFormatError naming the file and line for a missing file, a line
    without exactly one tab, a non-integer id, a duplicate user or item, or a user
    without items. Set ``require_titles=False`` to load interactions without the
    titles file. Users keep their file order, so user index u is line u + 1 of the
    pairs file when it has no blank lines.
    """
    directory = Path(directory)
    pairs_path = directory / PAIRS_FILENAME
    titles_path = directory / TITLES_FILENAME
    if not pairs_path.is_file():
        raise MicroLensFormatError(f"{pairs_path} not found; point the directory at an unpacked MicroLens-50k copy")
    if require_titles and not titles_path.is_file():
        raise MicroLensFormatError(f"{titles_path} not found; pass require_titles=False to load interactions only")

    pairs = _read_pairs(pairs_path)
    titles = _read_titles(titles_path) if titles_path.is_file() else {}

    interacted_items = {item for _, items in pairs for item in items}
    item_ids = sorted(interacted_items | titles.keys())
    item_index = {item_id: index for index, item_id in enumerate(item_ids)}
    if titles:
        untitled = len(interacted_items - titles.keys())
        if untitled:
            logger.warning("%d MicroLens items in %s have no title in %s", untitled, pairs_path, titles_path)

    sequences = [np.array([item_index[item] for item in items], dtype=np.int64) for _, items in pairs]
    data = MicroLensData(
        user_ids=[user_id for user_id, _ in pairs],
        item_ids=item_ids,
        sequences=sequences,
        titles=titles,
        item_index=item_index,
    )
    logger.info(
        "Read MicroLens from %s: %d users, %d items, %d interactions",
        directory,
        data.n_users,
        data.n_items,
        data.n_interactions,
    )
    return data
