"""Exports for training elsewhere: WebDataset shards (webdataset.py) and a plain Parquet dataset (parquet.py).

Open-Sora's CSV and JSONL stay in :mod:`soraprep.manifest`; these two stream a manifest of any size, read
clip files from a folder or an object store, and write to either.
"""

from soraprep.export.clips import parse_bytes
from soraprep.export.parquet import ParquetExportResult, export_parquet
from soraprep.export.webdataset import ExportResult, export_webdataset, sample_key

__all__ = ["ExportResult", "ParquetExportResult", "export_parquet", "export_webdataset", "parse_bytes", "sample_key"]
