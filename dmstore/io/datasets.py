"""The bundled example datasets: features and labels of fixed train and test examples, and their
images (the example trains on them; the ``ds.dm`` accessor draws them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dmstore.errors import DmstoreError


@dataclass(frozen=True)
class DataSplit:
    """A dataset's fixed train and test examples, features standardised on the train examples.

    ``train_index``/``test_index`` are the examples' positions in the source (e.g. in
    ``sklearn.datasets.load_digits()``), so that images can be looked up later.
    """

    name: str
    x_train: np.ndarray  # [N_train, d] float32
    y_train: np.ndarray  # [N_train] int64
    x_test: np.ndarray  # [N_test, d] float32
    y_test: np.ndarray  # [N_test] int64
    classes: tuple[str, ...]
    train_index: np.ndarray  # [N_train] int64
    test_index: np.ndarray  # [N_test] int64
    description: str
    train_images: np.ndarray  # [N_train, H, W] or [N_train, H, W, 3]
    test_images: np.ndarray


def load_digits_split() -> DataSplit:
    """scikit-learn's bundled digits (1797 8x8 images, 10 classes): 1000 train, 797 test.

    The split is stratified by class with ``train_test_split(train_size=1000,
    random_state=0)``; both index lists are sorted, so examples keep the source order.
    Pixels are standardised with the train examples' mean and standard deviation
    (constant pixels are only centred).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        message = "the digits dataset needs scikit-learn: pip install 'dmstore[example]'"
        raise DmstoreError(message, exit_code=1) from None
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), train_size=1000, stratify=labels, random_state=0)
    train, test = np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
    x = digits.data.astype(np.float32)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0, std, 1.0).astype(np.float32)
    return DataSplit(
        name="digits",
        x_train=np.ascontiguousarray(x[train]),
        y_train=labels[train],
        x_test=np.ascontiguousarray(x[test]),
        y_test=labels[test],
        classes=tuple(str(c) for c in range(10)),
        train_index=train,
        test_index=test,
        description="sklearn load_digits; stratified train_test_split(train_size=1000, "
        "random_state=0), sorted; standardised on train",
        train_images=digits.images[train],
        test_images=digits.images[test],
    )


# bundled datasets ``dmstore example`` can use, by name
DATASETS: dict[str, Callable[[], DataSplit]] = {"digits": load_digits_split}
