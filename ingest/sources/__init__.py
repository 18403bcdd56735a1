"""Readers, one module per input format, and format detection.

Each reader module exposes a reader object (see ``ingest.sources.base.Reader``),
named ``READER`` unless the table below says otherwise.
``READERS`` maps the format names users give to ``--format``.
"""

from __future__ import annotations

import importlib

from ingest.errors import InputFormatError
from ingest.sources.base import UTF8_BOM, Reader, read_head

#: format name -> (module, attribute). Detection tries them in this order.
_MODULES = {
    "riskgate-jsonl": ("ingest.sources.riskgate_jsonl", "READER"),
    "cognito-user-activity": ("ingest.sources.cognito_user_activity", "READER"),
    "cognito-auth-events": ("ingest.sources.cognito_auth_events", "READER"),
    "rba-csv": ("ingest.sources.rba_csv", "READER"),
    "csv": ("ingest.sources.tabular", "CSV_READER"),
    "parquet": ("ingest.sources.tabular", "PARQUET_READER"),
}


def reader_names() -> list[str]:
    return [n for n in _MODULES if _load(n) is not None]


def _load(name: str) -> Reader | None:
    module, attr = _MODULES[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None  # not written yet
        raise
    return getattr(mod, attr)


def get_reader(name: str) -> Reader:
    if name not in _MODULES or _load(name) is None:
        raise InputFormatError(f"unknown format {name!r}; expected one of: {', '.join(reader_names())}")
    return _load(name)  # type: ignore[return-value]


def detect_format(path: str) -> str:
    """The format of ``path`` from its first bytes; a clear error when nothing matches."""
    head = read_head(path).removeprefix(UTF8_BOM)  # (a byte-order mark is no part of any format's first line)
    if not head.strip():
        raise InputFormatError("is empty: there is nothing to detect a format from", source=str(path))
    for name in reader_names():
        reader = _load(name)
        if reader is not None and reader.sniff(head):
            return name
    packed = next((what for magic, what in _OTHER_COMPRESSIONS if head.startswith(magic)), None)
    if packed is not None:  # riskgate reads gzip only: say so rather than "not recognised"
        raise InputFormatError(f"is compressed with {packed}, which riskgate does not read: decompress it (or "
                               "compress it with gzip, which riskgate reads as it goes)", source=str(path))
    raise InputFormatError(
        "format not recognised; give --format with one of: " + ", ".join(reader_names()), source=str(path)
    )


#: the first bytes of compressed files riskgate does not read, and what they are
_OTHER_COMPRESSIONS = ((b"BZh", "bzip2"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"),
                       (b"PK\x03\x04", "zip"), (b"\x04\x22\x4d\x18", "lz4"))
