"""Public video-text datasets and local folders -> one clip manifest (``soraprep ingest``), and the
downloader that fetches and cuts what a manifest points to (``soraprep download``).

One file per dataset (``panda70m``, ``webvid``, ``internvid``, ``msrvtt``, ``videoinstruct``,
``shot2story``, ``youku_mplug``, ``folder``), registered by name in :data:`PARSERS`.
"""

from soraprep.datasets.common import MetadataError
from soraprep.datasets.ingest import IngestReport, ingest, ingest_rows
from soraprep.datasets.registry import PARSERS, dataset_names, get_spec

__all__ = ["PARSERS", "IngestReport", "MetadataError", "dataset_names", "get_spec", "ingest", "ingest_rows"]
