"""The ``request_info`` action: column names, column values and term look-up over a dataset.

The paper's action is ``request_info(data_path, info_type, keyterm)`` with ``info_type`` one
of ``column_names``, ``column_values`` or ``term``. The published implementation re-read every
CSV file and computed an edit distance against every cell on each call (5.1 s on 9.1 M cells).
Here an :class:`InfoIndex` is built **once per database** and answers in milliseconds:

* every distinct cell value of every column (numbers too, as text) is stored once, with the
  columns it occurs in and how many rows hold it;
* values are looked up by a *key*: whitespace collapsed, case folded, numbers written
  canonically (``"5.0"``, ``"5.00"`` and ``"5"`` share the key ``"5"``; a leading zero such as
  ``"0389"`` keeps a string a string). Exact matches are a dict look-up;
* fuzzy matches are the nearest keys by normalised Levenshtein distance (< 0.5), searched with
  rapidfuzz over the distinct keys only. Keys are bucketed by (length, letters, digits): every
  edit changes each of those counts by at most one, which gives a lower bound on the distance
  of a whole bucket, so buckets that cannot hold a close enough key are skipped and the rest
  are visited nearest first, stopping once the best ``limit`` results cannot improve.

Sources: a SQLite database file, a directory of CSV files (one table per file, named by its
stem) or a single CSV file. :func:`get_index` caches indexes in memory, keyed by the source's
path, modification time and size, and (by default) persists them next to the database as a
``.info-index.npz`` file (no pickle) so that a new process loads instead of rebuilding.

``data_path`` in :meth:`InfoIndex.answer` is read leniently: a table name (``"patients"``), a
CSV path (``"/data/mimic_iii/PATIENTS.csv"``), a database path followed by a table
(``"mimic.db/patients"``, ``"mimic.db:patients"``), ``"table.column"``, or the dataset itself
(its directory or database path, or ``""``) meaning every table. Table and column names are
matched case-insensitively; an unknown name gets a "did you mean" with the valid names.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import math
import os
import re
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from medagentgym.graders.bounds import MAX_INT_BITS, short_repr, to_int

__all__ = [
    "FUZZY_THRESHOLD",
    "INFO_TYPES",
    "ColumnInfo",
    "InfoIndex",
    "Match",
    "TableInfo",
    "clear_cache",
    "get_index",
    "request_info",
]

INFO_TYPES = ("column_names", "column_values", "term")
MAX_LISTED_VALUES = 10  # column_values lists every value only up to this many distinct values
N_EXAMPLES = 5  # otherwise this many of the most frequent values are shown
FUZZY_THRESHOLD = 0.5  # normalised edit distance must be strictly below this
FUZZY_LIMIT = 5
MAX_SHOWN_LOCATIONS = 20
MAX_VALUE_CHARS = 1000  # longer cells (notes) are listed but not searchable by term
MAX_KEYTERM_CHARS = 2 * MAX_VALUE_CHARS  # a longer keyterm is within 0.5 of no searchable key
MAX_PATH_CHARS = 1000
MAX_SHOWN_CHARS = 200  # an agent's text echoed in an observation
INDEX_FORMAT = 1
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_MEMORY_CACHE_SIZE = 4
_INFO_ALIASES = {
    "column_names": "column_names",
    "column_name": "column_names",
    "columns": "column_names",
    "column_values": "column_values",
    "column_value": "column_values",
    "values": "column_values",
    "term": "term",
    "terms": "term",
    "keyterm": "term",
}


@dataclass(frozen=True)
class Match:
    """One place where a value occurs: ``table.column`` holds ``value`` in ``count`` rows."""

    table: str
    column: str
    value: str
    count: int
    distance: float = 0.0  # normalised edit distance of the value's key; 0.0 = exact match

    @property
    def exact(self) -> bool:
        return self.distance == 0.0


@dataclass
class ColumnInfo:
    name: str
    n_distinct: int
    n_null: int
    top: list[tuple[str, int]]  # every value when n_distinct <= 10, else the most frequent


@dataclass
class TableInfo:
    name: str
    n_rows: int
    columns: list[ColumnInfo] = field(default_factory=list)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# --------------------------------------------------------------------------- keys

_INTEGER = re.compile(r"[+-]?(?:0|[1-9]\d*)")
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[ t](\d{2}:\d{2})(?::(\d{2})(?:\.(\d*))?)?")
_NUMBER = re.compile(r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def value_key(text: str) -> str:
    """The look-up key of a cell value or a search term (see the module docstring).

    Whitespace is collapsed and case folded; numbers are written canonically (``"5.0"`` ->
    ``"5"``, ``"72.50"`` -> ``"72.5"``; a leading zero keeps a string a string); timestamps
    ``YYYY-MM-DD[ T]HH:MM[:SS[.fff]]`` become ``YYYY-MM-DD HH:MM:SS``, or just the date at
    midnight, so that ``"2105-12-31"`` finds ``"2105-12-31 00:00:00"``.
    """
    key = " ".join(text.replace("\x00", " ").split()).casefold()
    if key and (key[0].isdigit() or key[0] in "+-."):
        if _NUMBER.fullmatch(key):
            if _INTEGER.fullmatch(key):
                number = to_int(key)  # None for a very long digit string: kept as text
                key = key if number is None else str(number)
            else:
                number = float(key)
                if number.is_integer() and abs(number) < 1e16:
                    key = str(int(number))
                elif math.isfinite(number):
                    key = repr(number)
        elif len(key) >= 16 and key[4] == "-" and (m := _TIMESTAMP.fullmatch(key)):
            date, hm, sec, frac = m.groups()
            sec = sec or "00"
            if frac and frac.strip("0"):
                key = f"{date} {hm}:{sec}.{frac.rstrip('0')}"
            elif hm == "00:00" and sec == "00":
                key = date
            else:
                key = f"{date} {hm}:{sec}"
    return text if key == text else key


def _features_one(key: str) -> tuple[int, int, int]:
    """(length, letters, digits) of one key, classified exactly as :func:`_features` does."""
    letters = digits = 0
    for ch in key:
        o = ord(ch)
        if 48 <= o <= 57:
            digits += 1
        elif o >= 128 or 97 <= (o | 32) <= 122:
            letters += 1
    return len(key), letters, digits


def _bucket_code(length: Any, letters: Any, digits: Any) -> Any:
    return (length << 42) | (letters << 21) | digits


def _features(keys: list[str], chunk: int = 1 << 15) -> np.ndarray:
    """(length, letters, digits) of every key, vectorised over the keys' code points.

    Any partition of the alphabet gives a valid distance bound; ours is digits, letters (ASCII
    letters and every non-ASCII character) and the rest. Chunked to bound memory.
    """
    out = np.zeros((len(keys), 3), dtype=np.int32)
    for lo in range(0, len(keys), chunk):
        part = keys[lo : lo + chunk]
        codes = np.frombuffer(
            "\x00".join(part).encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32
        )
        lengths = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
        ends = np.cumsum(lengths + 1) - 1  # each key's terminator (or one past the end)
        starts = ends - lengths
        is_digit = (codes >= 48) & (codes <= 57)
        lower = codes | 0x20
        is_letter = ((lower >= 97) & (lower <= 122)) | (codes >= 128)
        cum_letters = np.concatenate(([0], np.cumsum(is_letter, dtype=np.int64)))
        cum_digits = np.concatenate(([0], np.cumsum(is_digit, dtype=np.int64)))
        out[lo : lo + len(part), 0] = lengths
        out[lo : lo + len(part), 1] = cum_letters[ends] - cum_letters[starts]
        out[lo : lo + len(part), 2] = cum_digits[ends] - cum_digits[starts]
    return out


# --------------------------------------------------------------------------- sources


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source_kind(path: Path) -> str:
    if path.is_dir():
        return "csv_dir"
    if path.name.lower().endswith(CSV_SUFFIXES):
        return "csv"
    return "sqlite"


def _csv_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.name.lower().endswith(CSV_SUFFIXES))
    return [path]


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def source_signature(path: str | os.PathLike[str]) -> tuple:
    """What identifies the current contents of a source: paths, mtimes and sizes.

    For SQLite also the header's file change counter (bumped by every committed write in
    rollback-journal mode) and the ``-wal`` file's mtime and size (WAL mode).
    """
    p = Path(path).resolve()
    if _source_kind(p) == "sqlite":
        st = p.stat()
        with p.open("rb") as fh:
            header = fh.read(28)
        counter = int.from_bytes(header[24:28], "big") if len(header) == 28 else 0
        wal = p.with_name(p.name + "-wal")
        wal_st = (wal.stat().st_mtime_ns, wal.stat().st_size) if wal.exists() else (0, 0)
        return (str(p), st.st_mtime_ns, st.st_size, counter, *wal_st)
    return (str(p), *((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in _csv_files(p)))


def _connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to a SQLite source, or an in-memory copy of CSV files."""
    if _source_kind(path) == "sqlite":
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    import pandas as pd

    con = sqlite3.connect(":memory:")
    for file in _csv_files(path):
        sep = "\t" if ".tsv" in file.name.lower() else ","
        frame = pd.read_csv(file, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        frame.to_sql(_strip_suffix(file.name, CSV_SUFFIXES), con, index=False)
    return con


# --------------------------------------------------------------------------- the index


class InfoIndex:
    """Distinct values of every column of a dataset, indexed for ``request_info``."""

    def __init__(
        self,
        tables: list[TableInfo],
        col_table: np.ndarray,
        col_name: list[str],
        keys: list[str],
        values: list[str],
        key_ptr: np.ndarray,
        val_ptr: np.ndarray,
        loc_col: np.ndarray,
        loc_count: np.ndarray,
        bucket_start: np.ndarray,
        bucket_feat: np.ndarray,
        source: str = "",
        signature: tuple = (),
    ) -> None:
        self.tables = tables
        self.source = source
        self.signature = signature
        self._col_table = col_table  # column id -> table position
        self._col_name = col_name
        self._keys = keys  # sorted by bucket (length, letters, digits)
        self._values = values  # grouped by key: values of key k are key_ptr[k]:key_ptr[k+1]
        self._key_ptr = key_ptr
        self._val_ptr = val_ptr  # locations of value v are val_ptr[v]:val_ptr[v+1]
        self._loc_col = loc_col
        self._loc_count = loc_count
        self._bucket_start = bucket_start  # keys of bucket b are bucket_start[b]:[b+1]
        self._bucket_feat = bucket_feat.astype(np.int64)
        f = self._bucket_feat
        self._bucket_code = _bucket_code(f[:, 0], f[:, 1], f[:, 2])
        self._tables_by_lower = {t.name.lower(): i for i, t in enumerate(tables)}

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, path: str | os.PathLike[str]) -> InfoIndex:
        """Index a SQLite database, a directory of CSV files or one CSV file.

        SQLite does the heavy lifting: per column, the distinct values (as text) and their
        row counts go into a temporary table, which is then read back sorted by text, so
        every distinct value becomes one Python string and memory stays near the final size.
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no database or CSV files at {p}")
        signature = source_signature(p)
        con = _connect(p)
        try:
            index = cls._build(con, source=str(p), signature=signature)
        finally:
            con.close()
        _release_freed_memory()
        return index

    @classmethod
    def _build(cls, con: sqlite3.Connection, *, source: str, signature: tuple) -> InfoIndex:
        import pandas as pd

        con.execute("PRAGMA temp_store = FILE")
        con.execute("DROP TABLE IF EXISTS temp._mag_cells")
        con.execute("CREATE TEMP TABLE _mag_cells (text TEXT, col INTEGER, n INTEGER)")
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables: list[TableInfo] = []
        col_table: list[int] = []
        col_name: list[str] = []
        col_null: list[int] = []
        for t_pos, name in enumerate(names):
            t = _quote(name)
            columns = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
            counts = con.execute(
                "SELECT COUNT(*)" + "".join(f", COUNT({_quote(c)})" for c in columns) + f" FROM {t}"
            ).fetchone()
            tables.append(TableInfo(name=name, n_rows=int(counts[0])))
            for column, non_null in zip(columns, counts[1:], strict=True):
                q = _quote(column)
                con.execute(
                    f"INSERT INTO temp._mag_cells SELECT CAST({q} AS TEXT), ?, COUNT(*) FROM {t} "
                    f"WHERE {q} IS NOT NULL AND typeof({q}) != 'blob' GROUP BY 1",
                    (len(col_name),),
                )
                col_table.append(t_pos)
                col_name.append(column)
                col_null.append(int(counts[0]) - int(non_null))

        # read back sorted by text: equal texts are adjacent and become one value
        values: list[str] = []
        vid_parts, col_parts, n_parts = [], [], []
        previous = None
        cursor = con.execute("SELECT text, col, n FROM temp._mag_cells ORDER BY text")
        while rows := cursor.fetchmany(1 << 16):
            texts, cols, ns = zip(*rows, strict=True)
            arr = np.empty(len(texts), dtype=object)
            arr[:] = texts
            new = np.empty(len(texts), dtype=bool)
            new[0] = texts[0] != previous
            new[1:] = arr[1:] != arr[:-1]
            vid_parts.append(np.cumsum(new, dtype=np.int64) + (len(values) - 1))
            values.extend(arr[new].tolist())
            col_parts.append(np.asarray(cols, dtype=np.int32))
            n_parts.append(np.asarray(ns, dtype=np.int64))
            previous = texts[-1]
        con.execute("DROP TABLE temp._mag_cells")
        loc_vid = np.concatenate(vid_parts) if vid_parts else np.zeros(0, np.int64)
        loc_col = np.concatenate(col_parts) if col_parts else np.zeros(0, np.int32)
        loc_n = np.concatenate(n_parts) if n_parts else np.zeros(0, np.int64)
        del vid_parts, col_parts, n_parts

        # per-column statistics: distinct count and the most frequent values
        n_cols = len(col_name)
        distinct = np.bincount(loc_col, minlength=n_cols)
        first = np.concatenate(([0], np.cumsum(distinct)))
        by_col = np.lexsort((loc_vid, -loc_n, loc_col))
        for c in range(n_cols):
            nd = int(distinct[c])
            shown = by_col[first[c] : first[c] + (nd if nd <= MAX_LISTED_VALUES else N_EXAMPLES)]
            top = [(values[int(loc_vid[j])], int(loc_n[j])) for j in shown]
            tables[col_table[c]].columns.append(ColumnInfo(col_name[c], nd, col_null[c], top))
        del by_col

        # keys: grouped by bucket (length, letters, digits), sorted within a bucket
        raw = np.empty(len(values), dtype=object)
        raw[:] = [value_key(v) if len(v) <= MAX_VALUE_CHARS else "" for v in values]
        key_of_value, uniques = pd.factorize(raw, sort=True)
        del raw
        uniques = list(uniques)
        feats = _features(uniques)
        order = np.lexsort((np.arange(len(uniques)), feats[:, 2], feats[:, 1], feats[:, 0]))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        keys = [uniques[i] for i in order.tolist()]
        feats = feats[order]
        del uniques

        # renumber values so that the values of one key are contiguous
        value_key_id = rank[key_of_value]
        value_order = np.argsort(value_key_id, kind="stable")
        new_vid = np.empty_like(value_order)
        new_vid[value_order] = np.arange(len(value_order))
        values = [values[i] for i in value_order.tolist()]
        key_ptr = np.concatenate(([0], np.cumsum(np.bincount(value_key_id, minlength=len(keys)))))

        # locations (value, column, rows), sorted by value then column
        loc_vid = new_vid[loc_vid]
        o = np.lexsort((loc_col, loc_vid))
        loc_vid, loc_col, loc_n = loc_vid[o], loc_col[o], loc_n[o]
        val_ptr = np.concatenate(([0], np.cumsum(np.bincount(loc_vid, minlength=len(values)))))

        if keys:
            change = np.any(feats[1:] != feats[:-1], axis=1)
            bucket_start = np.concatenate(([0], np.flatnonzero(change) + 1, [len(keys)]))
            bucket_feat = feats[bucket_start[:-1]]
        else:
            bucket_start = np.zeros(1, np.int64)
            bucket_feat = np.zeros((0, 3), np.int32)
        return cls(
            tables, np.asarray(col_table, np.int32), col_name, keys, values,
            key_ptr.astype(np.int64), val_ptr.astype(np.int64), loc_col.astype(np.int32),
            loc_n.astype(np.int64), bucket_start.astype(np.int64), bucket_feat,
            source=source, signature=signature,
        )  # fmt: skip

    # ------------------------------------------------------------------ persistence

    def save(self, file: str | os.PathLike[str]) -> bool:
        """Write the index to ``file`` (numpy ``.npz``, no pickle); False if it cannot."""
        keys_blob = "\x00".join(self._keys)
        values_blob = "\x00".join(self._values)
        if values_blob.count("\x00") != max(len(self._values) - 1, 0):
            return False  # a value holds a NUL character: keep the index in memory only
        meta = {
            "format": INDEX_FORMAT,
            "source": self.source,
            "signature": list(self.signature),
            "col_name": self._col_name,
            "tables": [
                {
                    "name": t.name,
                    "n_rows": t.n_rows,
                    "columns": [[c.name, c.n_distinct, c.n_null, c.top] for c in t.columns],
                }
                for t in self.tables
            ],
        }
        target = Path(file)
        tmp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".info-index-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                    keys=_blob(keys_blob),
                    values=_blob(values_blob),
                    col_table=self._col_table,
                    key_ptr=self._key_ptr,
                    val_ptr=self._val_ptr,
                    loc_col=self._loc_col,
                    loc_count=self._loc_count,
                    bucket_start=self._bucket_start,
                    bucket_feat=self._bucket_feat.astype(np.int32),
                )
            os.replace(tmp, target)
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return False
        return True

    @classmethod
    def load(cls, file: str | os.PathLike[str], signature: tuple | None = None) -> InfoIndex:
        """Read an index written by :meth:`save`; ``ValueError`` if it is stale or foreign."""
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            if meta.get("format") != INDEX_FORMAT:
                raise ValueError("index file has another format version")
            if signature is not None and _jsonable(signature) != meta["signature"]:
                raise ValueError("index file is stale")
            keys = _unblob(data["keys"])
            values = _unblob(data["values"])
            key_ptr = data["key_ptr"]
            if len(key_ptr) == 1:
                keys, values = [], []
            arrays = {
                name: data[name]
                for name in (
                    "col_table", "val_ptr", "loc_col", "loc_count", "bucket_start", "bucket_feat",
                )
            }  # fmt: skip
        tables = [
            TableInfo(
                name=t["name"],
                n_rows=t["n_rows"],
                columns=[
                    ColumnInfo(name, nd, nn, [(v, c) for v, c in top])
                    for name, nd, nn, top in t["columns"]
                ],
            )
            for t in meta["tables"]
        ]
        return cls(
            tables, arrays["col_table"], meta["col_name"], keys, values, key_ptr,
            arrays["val_ptr"], arrays["loc_col"], arrays["loc_count"],
            arrays["bucket_start"], arrays["bucket_feat"],
            source=meta["source"], signature=tuple(meta["signature"]),
        )  # fmt: skip

    # ------------------------------------------------------------------ look-ups

    @property
    def n_values(self) -> int:
        """Number of distinct cell values (across all columns)."""
        return len(self._values)

    @property
    def n_keys(self) -> int:
        return len(self._keys)

    def table(self, name: str) -> TableInfo:
        """The table called ``name`` (case-insensitive); ``KeyError`` with suggestions."""
        i = self._tables_by_lower.get(name.strip().lower())
        if i is None:
            raise KeyError(self._unknown("table", name, [t.name for t in self.tables]))
        return self.tables[i]

    def column(self, table: str, column: str) -> ColumnInfo:
        t = self.table(table)
        for c in t.columns:
            if c.name.lower() == column.strip().lower():
                return c
        raise KeyError(self._unknown(f"column of table {t.name}", column, t.column_names))

    def column_names(self, table: str) -> list[str]:
        return self.table(table).column_names

    def column_values(self, table: str, column: str) -> list[str] | None:
        """Every distinct value when there are at most 10, else ``None``."""
        c = self.column(table, column)
        if c.n_distinct > MAX_LISTED_VALUES:
            return None
        return [v for v, _ in c.top]

    def term(
        self, keyterm: Any, *, table: str | None = None, limit: int = FUZZY_LIMIT
    ) -> list[Match]:
        """Cells equal to ``keyterm`` (case-insensitive), else the nearest ``limit`` values.

        Exact matches come first and, when there are any, alone (every location is
        returned). Otherwise the ``limit`` nearest distinct keys with normalised edit distance
        below 0.5 are returned with all their locations, nearest first. ``table`` restricts
        the search to one table.
        """
        key = value_key(_arg(keyterm))
        if not key.strip() or len(key) > MAX_KEYTERM_CHARS:
            return []
        t_pos = None if table is None else self._tables_by_lower.get(self.table(table).name.lower())
        kid = self._find(key)
        if kid is not None:
            found = self._matches(kid, 0.0, t_pos)
            if found:
                return found
        out: list[Match] = []
        n_keys = 0
        search_limit = limit if t_pos is None else max(limit * 10, 50)
        for dist, k in self._nearest(key, search_limit):
            if k == kid:
                continue
            found = self._matches(k, dist, t_pos)
            if found:
                out.extend(found)
                n_keys += 1
                if n_keys >= limit:
                    break
        return out

    def _find(self, key: str) -> int | None:
        """The id of ``key``: a binary search for its bucket, then within the bucket."""
        code = _bucket_code(*_features_one(key))
        b = int(np.searchsorted(self._bucket_code, code))
        if b >= len(self._bucket_code) or int(self._bucket_code[b]) != code:
            return None
        lo, hi = int(self._bucket_start[b]), int(self._bucket_start[b + 1])
        i = bisect.bisect_left(self._keys, key, lo, hi)
        return i if i < hi and self._keys[i] == key else None

    def _matches(self, kid: int, distance: float, t_pos: int | None) -> list[Match]:
        out = []
        for v in range(self._key_ptr[kid], self._key_ptr[kid + 1]):
            value = self._values[v]
            for j in range(self._val_ptr[v], self._val_ptr[v + 1]):
                col = int(self._loc_col[j])
                tp = int(self._col_table[col])
                if t_pos is not None and tp != t_pos:
                    continue
                out.append(
                    Match(
                        self.tables[tp].name,
                        self._col_name[col],
                        value,
                        int(self._loc_count[j]),
                        distance,
                    )
                )
        out.sort(key=lambda m: (-m.count, m.table, m.column))
        return out

    def _nearest(self, key: str, limit: int) -> list[tuple[float, int]]:
        """The ``limit`` nearest keys (distance < 0.5), as sorted (distance, key id)."""
        if not self._keys:
            return []
        q_len, q_letters, q_digits = _features_one(key)
        q_other = q_len - q_letters - q_digits
        f = self._bucket_feat
        length = f[:, 0]
        d_len = np.abs(length - q_len)
        d_let = np.abs(f[:, 1] - q_letters)
        d_dig = np.abs(f[:, 2] - q_digits)
        d_oth = np.abs(length - f[:, 1] - f[:, 2] - q_other)
        lower = np.maximum.reduce([d_len, d_let, d_dig, d_oth, (d_let + d_dig + d_oth + 1) // 2])
        bound = lower / np.maximum(np.maximum(length, q_len), 1)
        candidates = np.flatnonzero(bound < FUZZY_THRESHOLD)
        candidates = candidates[np.argsort(bound[candidates], kind="stable")]
        best: list[tuple[float, int]] = []  # max-heap via negated distances
        for b in candidates.tolist():
            kth = -best[0][0] if len(best) >= limit else FUZZY_THRESHOLD
            if bound[b] >= kth and len(best) >= limit:
                break
            start, stop = int(self._bucket_start[b]), int(self._bucket_start[b + 1])
            for _choice, dist, idx in process.extract(
                key, self._keys[start:stop],
                scorer=Levenshtein.normalized_distance, score_cutoff=kth, limit=limit,
            ):  # fmt: skip
                if dist >= FUZZY_THRESHOLD:
                    continue
                item = (-dist, -(start + idx))
                if len(best) < limit:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
        return sorted((-d, -k) for d, k in best)

    # ------------------------------------------------------------------ observations

    def answer(self, info_type: str, data_path: str = "", keyterm: Any = "") -> str:
        """The observation text for one ``request_info`` action (never raises on bad input).

        Arguments of any type and size are read as text; a keyterm longer than
        :data:`MAX_KEYTERM_CHARS` or a data_path longer than :data:`MAX_PATH_CHARS` is refused
        with a message, and the agent's text is echoed at most :data:`MAX_SHOWN_CHARS` long.
        """
        info_type, data_path, keyterm = _arg(info_type), _arg(data_path), _arg(keyterm).strip()
        kind = _INFO_ALIASES.get(info_type.strip().lower().replace(" ", "_"))
        if kind is None:
            return (
                f"Unknown info_type {_show(info_type, MAX_SHOWN_CHARS)}: use one of "
                + ", ".join(repr(t) for t in INFO_TYPES)
                + "."
            )
        if len(keyterm) > MAX_KEYTERM_CHARS:
            return (
                f"The keyterm is {len(keyterm):,} characters long; no searchable value is near "
                f"it (cells longer than {MAX_VALUE_CHARS:,} characters are not searchable). "
                f"Give a keyterm of at most {MAX_KEYTERM_CHARS:,} characters."
            )
        if len(data_path) > MAX_PATH_CHARS:
            return (
                f"data_path is {len(data_path):,} characters long; give a table name or a path "
                f"of at most {MAX_PATH_CHARS:,} characters."
            )
        table, column, unknown = self._resolve(data_path)
        if kind == "column_names":
            if table is None and unknown and keyterm:
                table, _, _ = self._resolve(keyterm)  # the table given as keyterm
            if table is None:
                if unknown:
                    return self._unknown("table", unknown, [t.name for t in self.tables])
                return self._describe_tables()
            t = self.table(table)
            return f"Table {t.name} ({_rows(t.n_rows)}) has {len(t.columns)} columns: " + ", ".join(
                t.column_names
            )
        if kind == "column_values":
            return self._answer_values(table, column or keyterm, unknown)
        if not keyterm:
            return "request_info(term) needs a keyterm: the value to look up."
        return self._answer_term(keyterm, table, unknown)

    def _answer_values(self, table: str | None, column: str, unknown: str) -> str:
        if not column:
            return (
                "request_info(column_values) needs a column name as keyterm "
                "(and the table as data_path)."
            )
        if table is None and unknown:
            return self._unknown("table", unknown, [t.name for t in self.tables])
        if table is None:
            owners = [
                t for t in self.tables if column.lower() in (c.lower() for c in t.column_names)
            ]
            if len(owners) != 1:
                if not owners:
                    all_columns = sorted({c for t in self.tables for c in t.column_names})
                    return self._unknown("column", column, all_columns)
                return (
                    f"Column {_show(column, MAX_SHOWN_CHARS)} exists in several tables ("
                    + ", ".join(t.name for t in owners)
                    + "); give the table as data_path."
                )
            table = owners[0].name
        try:
            t = self.table(table)
            c = self.column(table, column)
        except KeyError as exc:
            return str(exc.args[0])
        where = f"{t.name}.{c.name}"
        nulls = f" ({_rows(c.n_null)} NULL)" if c.n_null else ""
        if c.n_distinct == 0:
            return f"Column {where} holds no values: every row is NULL{nulls}."
        shown = ", ".join(f"{_show(v)} ({_rows(n)})" for v, n in c.top)
        if c.n_distinct <= MAX_LISTED_VALUES:
            return f"Column {where} has {c.n_distinct} distinct values{nulls}: {shown}."
        return (
            f"Column {where} has {c.n_distinct:,} distinct values{nulls}, too many to list "
            f"(at most {MAX_LISTED_VALUES} are listed). Most frequent: {shown}. Use "
            f"request_info with info_type 'term' to look up a specific value."
        )

    def _answer_term(self, keyterm: str, table: str | None, unknown: str) -> str:
        note = ""
        if unknown and table is None and not self._is_dataset_path(unknown):
            shown = _show(unknown, MAX_SHOWN_CHARS)
            note = f" (no table matches data_path {shown}; searched every table)"
        matches = self.term(keyterm, table=table)
        shown = _show(keyterm, MAX_SHOWN_CHARS)
        scope = f" in table {table}" if table else ""
        if table and not matches:
            matches = self.term(keyterm)
            if matches:
                scope = f" (none in table {table}; these are in other tables)"
        if not matches:
            return (
                f"No cell equals {shown}{scope}, and no value is within normalised edit "
                f"distance {FUZZY_THRESHOLD}{note}."
            )
        if matches[0].exact:
            head = f"Exact (case-insensitive) matches for {shown}{scope}{note}: "
            items = [f"{m.table}.{m.column} = {_show(m.value)} ({_rows(m.count)})" for m in matches]
        else:
            head = (
                f"No cell equals {shown}{scope}{note}. Nearest values (normalised edit "
                f"distance < {FUZZY_THRESHOLD}): "
            )
            items = [
                f"{_show(m.value)} in {m.table}.{m.column} "
                f"(distance {m.distance:.2f}, {_rows(m.count)})"
                for m in matches
            ]
        more = len(items) - MAX_SHOWN_LOCATIONS
        text = head + "; ".join(items[:MAX_SHOWN_LOCATIONS])
        return text + (f"; and {more} more." if more > 0 else ".")

    def _describe_tables(self) -> str:
        lines = [f"{len(self.tables)} tables (name, rows: columns):"]
        for t in self.tables:
            lines.append(f"{t.name}, {t.n_rows:,} rows: " + ", ".join(t.column_names))
        return "\n".join(lines)

    def _is_dataset_path(self, text: str) -> bool:
        if not self.source:
            return False
        src = Path(self.source)
        return text.rstrip("/\\").lower() in {
            src.name.lower(), _strip_suffix(src.name, DB_SUFFIXES).lower(), str(src).lower(),
            src.parent.name.lower(),
        }  # fmt: skip

    def _resolve(self, data_path: str) -> tuple[str | None, str | None, str]:
        """(table, column, unresolved text) for a lenient ``data_path``.

        The last path component naming a table wins (``.csv`` and database suffixes are
        ignored); ``table.column`` and ``dataset.table`` are understood; a directory (trailing
        slash), a database file or the dataset's own name means every table.
        """
        text = data_path.strip().strip("'\"`")
        if not text:
            return None, None, ""
        parts = [p for p in re.split(r"[/\\]|::?", text) if p]
        lookup = self._tables_by_lower
        for part in reversed(parts):
            name = _strip_suffix(part, CSV_SUFFIXES + DB_SUFFIXES)
            if name.lower() in lookup:
                return self.tables[lookup[name.lower()]].name, None, ""
            if "." in name:
                head, _, tail = name.rpartition(".")
                if head.lower() in lookup:  # table.column
                    return self.tables[lookup[head.lower()]].name, tail, ""
                if tail.lower() in lookup:  # dataset.table
                    return self.tables[lookup[tail.lower()]].name, None, ""
        if (
            not parts
            or text.endswith(("/", "\\"))
            or parts[-1].lower().endswith(DB_SUFFIXES)
            or self._is_dataset_path(text)
            or self._is_dataset_path(parts[-1])
        ):
            return None, None, ""
        return None, None, _strip_suffix(parts[-1], CSV_SUFFIXES)

    @staticmethod
    def _unknown(what: str, name: str, valid: list[str]) -> str:
        guess = process.extractOne(
            name.lower(), {v: v.lower() for v in valid}, scorer=Levenshtein.normalized_distance
        )
        hint = f" Did you mean {guess[2]!r}?" if guess and guess[1] < 0.5 else ""
        shown = ", ".join(valid[:60]) + (", ..." if len(valid) > 60 else "")
        return f"Unknown {what} {_show(name, MAX_SHOWN_CHARS)}.{hint} Valid names: {shown}."


def _rows(n: int) -> str:
    return "1 row" if n == 1 else f"{n:,} rows"


def _show(value: str, limit: int = 80) -> str:
    text = value if len(value) <= limit else value[: limit - 3] + "..."
    return repr(text)


def _arg(value: Any) -> str:
    """An action argument as text, whatever its type and size (never raises)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | float) or (
        isinstance(value, int) and value.bit_length() <= MAX_INT_BITS
    ):
        return str(value)
    return short_repr(value, MAX_KEYTERM_CHARS + 1)


def _release_freed_memory() -> None:
    """Hand the build's freed scratch memory back to the OS (glibc keeps it otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _blob(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", errors="surrogatepass"), dtype=np.uint8)


def _unblob(array: np.ndarray) -> list[str]:
    return array.tobytes().decode("utf-8", errors="surrogatepass").split("\x00")


def _jsonable(signature: tuple) -> list:
    return json.loads(json.dumps(list(signature)))


# --------------------------------------------------------------------------- caching

_cache: OrderedDict[tuple, InfoIndex] = OrderedDict()
_cache_lock = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


def _persist_file(source: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        digest = hashlib.sha1(str(source).encode()).hexdigest()[:16]
        return (
            Path(cache_dir) / f"{_strip_suffix(source.name, DB_SUFFIXES)}-{digest}.info-index.npz"
        )
    if source.is_dir():
        return source / ".info-index.npz"
    return source.with_name(source.name + ".info-index.npz")


def get_index(
    path: str | os.PathLike[str],
    *,
    persist: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> InfoIndex:
    """The index of a dataset, built once and cached.

    In memory, indexes are kept per (path, mtime, size) — a changed database is re-indexed.
    With ``persist``, the index is also saved (next to the source, or in ``cache_dir``) and
    loaded from there by later processes; failures to write are silently ignored.
    """
    source = Path(path).resolve()
    signature = source_signature(source)
    with _cache_lock:
        hit = _cache.get(signature)
        if hit is not None:
            _cache.move_to_end(signature)
            return hit
        lock = _build_locks.setdefault(str(source), threading.Lock())
    with lock:
        with _cache_lock:
            hit = _cache.get(signature)
        if hit is not None:
            return hit
        index = None
        file = _persist_file(source, cache_dir) if persist else None
        if file is not None and file.is_file():
            try:
                index = InfoIndex.load(file, signature=signature)
            except (OSError, ValueError, KeyError):
                index = None
        if index is None:
            index = InfoIndex.build(source)
            if file is not None:
                index.save(file)
        with _cache_lock:
            _cache[signature] = index
            while len(_cache) > _MEMORY_CACHE_SIZE:
                _cache.popitem(last=False)
        return index


def clear_cache() -> None:
    """Forget every in-memory index (persisted files stay)."""
    with _cache_lock:
        _cache.clear()


def request_info(
    dataset: str | os.PathLike[str],
    info_type: str,
    data_path: str = "",
    keyterm: Any = "",
    **kwargs: Any,
) -> str:
    """One ``request_info`` action over ``dataset`` (a SQLite file or a CSV directory)."""
    return get_index(dataset, **kwargs).answer(info_type, data_path, keyterm)
