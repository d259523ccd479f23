"""bench/studies/clip_split.py: the split's outputs, frame for frame."""

import numpy as np

from bench.studies.clip_split import split_outputs


def _recurrence(frames: np.ndarray) -> np.ndarray:
    """A stand-in recurrence whose every output depends on all earlier frames: a running sum."""
    return np.cumsum(frames, axis=0)


def test_the_split_restarts_the_second_half_and_warms_it_with_earlier_frames():
    frames = np.arange(1, 11, dtype=float)  # 10 frames, split at 5
    whole = _recurrence(frames)
    cold = split_outputs(_recurrence, frames, warm=0)
    assert len(cold) == 10 and np.array_equal(cold[:5], whole[:5])
    assert np.array_equal(cold[5:], np.cumsum(frames[5:]))  # the second half starts from nothing
    warm2 = split_outputs(_recurrence, frames, warm=2)
    assert np.array_equal(warm2[5:], np.cumsum(frames[3:])[2:])  # frames 3 and 4 warm it, their outputs dropped
    assert np.array_equal(split_outputs(_recurrence, frames, warm=5), whole)  # warmed from the first frame: whole
    assert np.array_equal(split_outputs(_recurrence, frames, warm=2, whole=whole), warm2)  # first half reused


def test_a_given_whole_run_is_not_run_again_for_the_first_half():
    calls = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return _recurrence(x)

    frames = np.ones(7)
    split_outputs(run, frames, warm=1, whole=_recurrence(frames))
    assert calls == [5]  # only the second half: frames 2-6 (split at 3, one frame early)
