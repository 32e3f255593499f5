"""Datasets: reading and checking the files, seeded splits, normalised tensors on a device."""

from ticketlab.data.augment import augment
from ticketlab.data.dataset import Dataset, load_dataset
from ticketlab.data.digits import load_digits
from ticketlab.data.idx import check_md5, md5_of, read_idx
from ticketlab.data.raw import RawSplits
from ticketlab.data.registry import (
    DATASETS,
    DatasetInfo,
    dataset_choices,
    dataset_names,
    describe_datasets,
    get_dataset,
    load_raw,
    register,
)
from ticketlab.data.sources import SOURCES, download, locate_files, resolve_data_dir

__all__ = [
    "DATASETS",
    "SOURCES",
    "Dataset",
    "DatasetInfo",
    "RawSplits",
    "augment",
    "check_md5",
    "dataset_choices",
    "dataset_names",
    "describe_datasets",
    "download",
    "get_dataset",
    "load_dataset",
    "load_digits",
    "load_raw",
    "locate_files",
    "md5_of",
    "read_idx",
    "register",
    "resolve_data_dir",
]
