import math

import numpy as np
import pytest

from memdistill import metrics

# After task 0: 90 on task 0.  After task 1: 60, 80.  After task 2: 50, 70, 95.
R = [[90.0, math.nan, math.nan],
     [60.0, 80.0, math.nan],
     [50.0, 70.0, 95.0]]


def test_final_accuracy():
    assert metrics.final_accuracy(R) == pytest.approx((50 + 70 + 95) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # task 0: best 90 -> 50 = 40; task 1: best 80 -> 70 = 10
    assert metrics.forgetting(R) == pytest.approx(25.0)
    # best earlier accuracy, not the one right after training
    R2 = [[50.0, math.nan, math.nan], [80.0, 60.0, math.nan], [40.0, 60.0, 90.0]]
    assert metrics.forgetting(R2) == pytest.approx(((80 - 40) + (60 - 60)) / 2)


def test_backward_transfer():
    assert metrics.backward_transfer(R) == pytest.approx(((50 - 90) + (70 - 80)) / 2)


def test_average_incremental_accuracy():
    assert metrics.average_incremental_accuracy(R) == pytest.approx((90 + 70 + (50 + 70 + 95) / 3) / 3)


def test_single_task_has_no_forgetting():
    assert metrics.forgetting([[70.0]]) == 0.0
    assert metrics.summarise([[70.0]])["acc"] == 70.0


def test_bad_matrix():
    with pytest.raises(ValueError):
        metrics.final_accuracy(np.zeros((2, 3)))
