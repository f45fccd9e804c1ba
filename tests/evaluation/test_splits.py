import logging

import numpy as np

from recommend.evaluation.splits import leave_last_out_split

SEQUENCES = [
    [4, 1, 3, 2],  # user 0: train [4, 1], validation 3, test 2
    [5, 6, 7],  # user 1: train [5], validation 6, test 7
    [8, 9],  # user 2: too short, train only
    [],  # user 3: no interactions, train only
]


def test_split_holds_out_last_two_items():
    split = leave_last_out_split(SEQUENCES)

    assert split.train[0].tolist() == [4, 1]
    assert split.validation_items[0] == 3
    assert split.test_items[0] == 2


def test_split_three_items_leaves_one_for_train():
    split = leave_last_out_split(SEQUENCES)

    assert split.train[1].tolist() == [5]
    assert split.validation_items[1] == 6
    assert split.test_items[1] == 7


def test_split_keeps_short_users_in_train():
    split = leave_last_out_split(SEQUENCES)

    assert split.train[2].tolist() == [8, 9]
    assert split.train[3].tolist() == []
    assert split.validation_items[2] == -1
    assert split.test_items[2] == -1
    assert split.short_users.tolist() == [2, 3]


def test_split_lists_evaluated_users():
    split = leave_last_out_split(SEQUENCES)

    assert split.evaluated_users.tolist() == [0, 1]


def test_split_histories_exclude_held_out_items():
    split = leave_last_out_split(SEQUENCES)

    assert split.validation_history(0).tolist() == [4, 1]
    assert split.test_history(0).tolist() == [4, 1, 3]
    assert split.test_history(2).tolist() == [8, 9]


def test_split_does_not_alias_input():
    sequences = [np.array([1, 2, 3, 4])]

    split = leave_last_out_split(sequences)
    split.train[0][0] = 99

    assert sequences[0][0] == 1


def test_split_logs_short_user_count(caplog):
    with caplog.at_level(logging.INFO, logger="recommend.evaluation.splits"):
        leave_last_out_split(SEQUENCES)

    assert "2 of 4 users have fewer than 3 interactions" in caplog.text
