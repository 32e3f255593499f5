from __future__ import annotations

import hashlib

import numpy as np
import torch

from ticketlab.data import digits, load_dataset, load_digits

# Changing this fingerprint changes every digits result: the test split must stay fixed.
TEST_SPLIT_FINGERPRINT = "73eaa174f87cb4bd"


def fingerprint(raw) -> str:
    return hashlib.sha256(raw.x_test.tobytes() + raw.y_test.tobytes()).hexdigest()[:16]


def test_raw_digits():
    raw = load_digits()
    assert raw.x_train.shape == (1438, 1, 8, 8) and raw.x_test.shape == (359, 1, 8, 8)
    assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.int64
    assert raw.x_train.max() == 16 and raw.x_train.min() == 0 and raw.value_range == (0.0, 16.0)
    assert raw.num_classes == 10
    assert set(np.unique(raw.y_test)) == set(range(10))
    assert fingerprint(raw) == TEST_SPLIT_FINGERPRINT


def test_sklearn_fallback_matches(monkeypatch):
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    raw = load_digits()
    assert fingerprint(raw) == TEST_SPLIT_FINGERPRINT
    assert raw.x_train.shape == (1438, 1, 8, 8)


def test_digits_dataset():
    d = load_dataset("digits")
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (1318, 120, 359)
    # train + val is exactly the raw training split (the validation images come out of it);
    # the test split is untouched
    raw = load_digits()
    assert torch.bincount(torch.cat([d.y_train, d.y_val])).tolist() == \
        np.bincount(raw.y_train).tolist()
    assert torch.equal(d.y_test, torch.from_numpy(raw.y_test))
    assert d.x_train.shape[1:] == d.x_test.shape[1:] == (1, 8, 8) and d.input_shape == (1, 8, 8)
    assert d.num_classes == 10 and d.x_val.dtype == torch.float32
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-3
    again, other = load_dataset("digits"), load_dataset("digits", split_seed=1)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.x_test, d.x_test)
    assert not torch.equal(other.y_val, d.y_val) and torch.equal(other.y_test, d.y_test)
