"""Data: the normalised record, its sources, validation, and the disjoint splits."""

from igds.core.data.schema import REJECT_KINDS, DataError, Record, Reject, make_record, normalise, record_id
from igds.core.data.sources import SplitData, read_source
from igds.core.data.splits import PRIORITY, SPLITS, Prepared, build_splits, mix_pool, on_task_share, pool_file, split_names

__all__ = [
    "PRIORITY",
    "REJECT_KINDS",
    "SPLITS",
    "split_names",
    "DataError",
    "Prepared",
    "Record",
    "Reject",
    "SplitData",
    "build_splits",
    "make_record",
    "mix_pool",
    "normalise",
    "on_task_share",
    "pool_file",
    "read_source",
    "record_id",
]
