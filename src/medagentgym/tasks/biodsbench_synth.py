"""Synthetic cBioPortal-style study tables for BioDSBench, generated from the published table
schemas (name, shape, per-column top-10 values) and the literals a task's reference code uses.

Every call to :func:`generate_study` with a new seed gives other tables: other row counts,
other identifiers, other value frequencies, so constants memorised from the real studies (or
from an earlier episode) do not hold. What the analyses need is kept: patient and sample keys
link (every sample's ``PATIENT_ID`` is a patient, mutations point at samples through
``Tumor_Sample_Barcode``, wide copy-number tables have one column per sample), survival
columns have no gaps, and the values the reference code filters on (``df["COL"] == "x"``,
``.isin([...])``, gene symbols) occur.

Pure numpy/pandas on the host; imported lazily by the family.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_FILE = "BioDSBench-Python/python_task_table_schemas.jsonl.gz"
#: caps that keep an episode's tables small (the references then run in about a second)
MAX_ROWS = {"patient": 160, "sample": 220, "mutations": 1500, "genes": 120, "other": 400}
SAMPLE_KEYS = ("SAMPLE_ID", "Sample_Id", "Sample_ID", "Tumor_Sample_Barcode", "Sample")
_HEADER = re.compile(r"name is `([^`]+)`\. Shape is \((\d+), (\d+)\)")
_COLUMN = re.compile(r"^Column `(.*?)``: top-10 frequent values: (\[.*?\])(.*)$", re.M)
_GENE = re.compile(r"^[A-Z][A-Z0-9-]{1,11}$")


@dataclass
class Column:
    name: str
    values: list[str]
    note: str = ""


@dataclass
class TableSchema:
    name: str
    rows: int
    cols: int
    columns: list[Column] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def parse_schema(text: str) -> TableSchema | None:
    """One table's published description -> its schema (None when it is not one)."""
    head = _HEADER.search(text)
    if head is None:
        return None
    table = TableSchema(head.group(1), int(head.group(2)), int(head.group(3)))
    for m in _COLUMN.finditer(text):
        try:
            values = [str(v) for v in ast.literal_eval(m.group(2))]
        except (ValueError, SyntaxError):
            values = []
        table.columns.append(Column(m.group(1), values, m.group(3).strip()))
    return table


def load_schemas(root: Path) -> dict[str, dict[str, TableSchema]]:
    """Study id -> table name -> schema."""
    out: dict[str, dict[str, TableSchema]] = {}
    with gzip.open(root / SCHEMA_FILE, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            tables = {}
            for text in row.get("table_schemas") or []:
                t = parse_schema(text)
                if t is not None:
                    tables[t.name] = t
            out[str(row["study_ids"])] = tables
    return out


# --------------------------------------------------------------------------- literals


def code_literals(code: str, schemas: dict[str, TableSchema]) -> dict[str, set[Any]]:
    """Values the reference code filters on, by column: ``df["C"] == v``, ``df["C"].isin([...])``,
    ``.map/.replace({...})`` keys, and gene-like string literals (for ``Hugo_Symbol``)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    columns = {c for t in schemas.values() for c in t.names}
    lists: dict[str, list[Any]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            vals = _constants(node.value)
            if vals is not None:
                lists[node.targets[0].id] = vals
    out: dict[str, set[Any]] = {}

    def add(col: str | None, vals: list[Any] | None) -> None:
        if col and vals:
            out.setdefault(col, set()).update(v for v in vals if isinstance(v, str | int | float)
                                               and not isinstance(v, bool))

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and \
                isinstance(node.ops[0], ast.Eq | ast.NotEq):
            left, right = node.left, node.comparators[0]
            for a, b in ((left, right), (right, left)):
                col = _column_of(a)
                if col and isinstance(b, ast.Constant):
                    add(col, [b.value])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            col = _column_of(node.func.value)
            if col and node.func.attr in ("isin", "map", "replace") and node.args:
                arg = node.args[0]
                vals = _constants(arg)
                if vals is None and isinstance(arg, ast.Name):
                    vals = lists.get(arg.id)
                add(col, vals)
    # gene symbols listed or compared (not keyword values such as value_name="CNA")
    listed: list[str] = []
    for node in ast.walk(tree):
        elts: list[ast.AST] = []
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            elts = list(node.elts)
        elif isinstance(node, ast.Compare):
            elts = [*node.comparators, node.left]
        listed.extend(e.value for e in elts if isinstance(e, ast.Constant)
                      and isinstance(e.value, str))
    # strings used as column names (df["X"], value_name="X") are not genes
    named = {n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
             and isinstance(n.slice, ast.Constant)}
    named |= {k.value.value for k in ast.walk(tree) if isinstance(k, ast.keyword)
              and isinstance(k.value, ast.Constant)}
    add("Hugo_Symbol", [g for g in listed if _GENE.match(g) and g not in columns
                        and g not in named])
    # any other string the code uses that is a known value of a column: make it common
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    for t in schemas.values():
        for c in t.columns:
            hit = strings.intersection(c.values)
            if hit:
                add(c.name, sorted(hit))
    out["__strings__"] = strings
    return out


def _column_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
            isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _constants(node: ast.AST) -> list[Any] | None:
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        vals = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        return vals if len(vals) == len(node.elts) else None
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant)]
    return None


# --------------------------------------------------------------------------- generation


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _decimals(values: list[str]) -> int:
    best = 0
    for v in values:
        if "." in v and "e" not in v.lower():
            best = max(best, len(v.split(".")[1].rstrip("0")))
    return min(best, 6)


def _template_ids(rng: Any, template: str, n: int, taken: set[str] | None = None) -> list[str]:
    """``n`` distinct identifiers shaped like ``template`` (its digit runs re-drawn)."""
    taken = set() if taken is None else taken
    parts = re.split(r"(\d+)", template or "ID0000")
    if len(parts) == 1:
        parts = [template, "0000", ""]
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        width = 1 if tries < 50 * n else 2
        s = "".join(str(rng.integers(10 ** (len(p) + width - 2), 10 ** (len(p) + width - 1)))
                    .zfill(len(p)) if i % 2 else p for i, p in enumerate(parts))
        if s not in taken:
            taken.add(s)
            out.append(s)
    return out


def _n(rng: Any, rows: int, cap: int, floor: int) -> int:
    """A row count spread around the published one (or the cap's reach), never equal to it:
    a count memorised from the real study, or a constant, holds in few episodes."""
    base = min(rows, cap / 1.5)
    n = rows
    for _ in range(20):
        n = int(max(floor, min(cap, round(base * rng.uniform(0.5, 1.5)))))
        if n != rows:
            break
    return n


def _weights(rng: Any, k: int) -> Any:
    import numpy as np

    w = rng.dirichlet(np.ones(k) * 1.5)
    return w / w.sum()


def _column_values(rng: Any, col: Column, n: int, extra: set[Any]) -> list[Any]:
    """``n`` values of a non-key column from its top values (and the literals the code uses)."""
    import numpy as np

    base = [v for v in col.values if v.lower() not in ("nan", "none", "")]
    nums = [_number(v) for v in base]
    lits = sorted((e for e in extra if e is not None), key=repr)
    numeric = bool(base) and all(x is not None for x in nums) and \
        all(isinstance(e, int | float) for e in lits)
    if numeric:
        pool = [float(x) for x in nums if x is not None] + [float(e) for e in lits]
        integer = all(float(x).is_integer() for x in pool) and _decimals(base) == 0
        timeish = any(k in col.name.upper() for k in ("MONTH", "DAYS", "TIME", "YEARS"))
        if len(set(pool)) < 10 and not timeish:
            vals = np.array(sorted(set(pool)))
            out = rng.choice(vals, size=n, p=_weights(rng, len(vals)))
        else:
            lo, hi = min(pool), max(pool)
            if timeish:
                lo = max(lo, 0.0)
                hi = max(hi, lo + 12.0)
            cont = rng.uniform(lo, hi, size=n)
            picks = rng.choice(np.array(pool), size=n)
            out = np.where(rng.random(n) < 0.3, picks, cont)
            if timeish:
                out = np.maximum(out, 0.1)
            out = np.round(out, 0 if integer else max(_decimals(base), 2))
        return [int(x) if integer else float(x) for x in out]
    pool_s = list(dict.fromkeys(base + [str(e) for e in lits]))
    if lits and all(_number(v) is not None for v in pool_s):
        # compared with text ("18") in the code: the column must read back as text
        pool_s.append("X")
    if not pool_s:
        return [""] * n
    # top-10 lists of high-cardinality text (ids, protein changes) get lookalike extras
    if len(base) >= 10 and len(set(base)) >= 10 and not lits and all(
            any(ch.isdigit() for ch in v) for v in base):
        pool_s = pool_s + _template_ids(rng, base[0], 10, set(pool_s))
    w = _weights(rng, len(pool_s))
    if lits:  # make sure the code's filter values are not rare
        lit_set = {str(e) for e in lits}
        w = np.array([x + (1.0 / len(lit_set) if v in lit_set else 0) for v, x in zip(pool_s, w,
                                                                                       strict=True)])
        w = w / w.sum()
    return list(rng.choice(np.array(pool_s, dtype=object), size=n, p=w))


def _survival_status(rng: Any, col: Column, n: int) -> list[Any] | None:
    vals = [v for v in col.values if re.match(r"^[01]:", v)]
    if not vals:
        return None
    zero = [v for v in vals if v.startswith("0:")] or vals
    one = [v for v in vals if v.startswith("1:")] or vals
    p = rng.uniform(0.35, 0.65)
    return [str(rng.choice(one)) if rng.random() < p else str(rng.choice(zero)) for _ in range(n)]


def _frame(rng: Any, schema: TableSchema, n: int, literals: dict[str, set[Any]],
           fixed: dict[str, list[Any]]) -> Any:
    import numpy as np
    import pandas as pd

    data: dict[str, list[Any]] = {}
    for col in schema.columns:
        if col.name in fixed:
            data[col.name] = fixed[col.name]
            continue
        status = _survival_status(rng, col, n) if col.name.endswith("STATUS") else None
        data[col.name] = status if status is not None else \
            _column_values(rng, col, n, literals.get(col.name, set()))
    for extra in _missing_columns(schema, literals):
        data[extra] = list(np.round(rng.gamma(1.5, 4.0, size=n), 6))
    return pd.DataFrame(data)


def _is_wide(schema: TableSchema) -> bool:
    names = schema.names
    return bool(names) and names[0] == "Hugo_Symbol" and schema.cols > 12 and \
        "Variant_Classification" not in names


def generate_study(schemas: dict[str, TableSchema], literals: dict[str, set[Any]],
                   seed: int, scale: float = 1.0) -> dict[str, Any]:
    """Table name -> DataFrame for one episode of one study (see the module docstring);
    ``scale`` shrinks the row caps (oncoprints are slow to lay out)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tables: dict[str, Any] = {}
    taken: set[str] = set()
    pat_schema = schemas.get("data_clinical_patient")
    samp_schema = schemas.get("data_clinical_sample")
    patients: list[str] = []
    if pat_schema is not None:
        n_pat = _n(rng, pat_schema.rows, round(MAX_ROWS["patient"] * scale), 10)
        col = pat_schema.column("PATIENT_ID")
        patients = _template_ids(rng, col.values[0] if col and col.values else "P-0000001",
                                 n_pat, taken)
        tables["data_clinical_patient"] = _frame(rng, pat_schema, n_pat, literals,
                                                 {"PATIENT_ID": patients})
    samples: list[str] = []
    if samp_schema is not None:
        if not patients:
            patients = _template_ids(rng, "P-0000001", _n(rng, samp_schema.rows,
                                                          MAX_ROWS["patient"], 12), taken)
        ratio = samp_schema.rows / max(1, pat_schema.rows if pat_schema else samp_schema.rows)
        n_samp = max(len(patients), min(round(MAX_ROWS["sample"] * scale),
                                        round(len(patients) * ratio)))
        owners = list(patients) + list(rng.choice(patients, size=n_samp - len(patients)))
        rng.shuffle(owners)
        col = samp_schema.column("SAMPLE_ID")
        pcol = samp_schema.column("PATIENT_ID")
        if col and pcol and set(col.values) == set(pcol.values):
            # studies whose sample ids are the patient ids (one sample each)
            n_samp, owners, samples = len(patients), list(patients), list(patients)
        else:
            samples = _template_ids(rng, col.values[0] if col and col.values else
                                    "S-0000001-T01", n_samp, taken)
        tables["data_clinical_sample"] = _frame(rng, samp_schema, n_samp, literals,
                                                {"SAMPLE_ID": samples, "PATIENT_ID": owners})
    genes = _gene_pool(schemas, literals)
    for name, schema in schemas.items():
        if name in tables:
            continue
        if _is_wide(schema):
            tables[name] = _wide(rng, schema, samples or patients, genes,
                                 samp_schema.rows if samp_schema else len(samples), scale)
            if "Entrez_Gene_Id" in literals.get("__strings__", set()) and \
                    "Entrez_Gene_Id" not in tables[name].columns:
                tables[name].insert(1, "Entrez_Gene_Id",
                                    rng.integers(1, 100000, size=len(tables[name])))
            continue
        kind = "mutations" if "mutation" in name else "other"
        n = _n(rng, schema.rows, round(MAX_ROWS[kind] * scale), 20)
        if "gene" in schema.names:  # one row per gene (MutSig)
            n = min(n, len(genes))
        fixed: dict[str, list[Any]] = {}
        for key in SAMPLE_KEYS:
            if key in schema.names and samples:
                fixed[key] = list(rng.choice(samples, size=n))
        if "PATIENT_ID" in schema.names and patients:
            if fixed:  # the patient of the sample drawn
                owner = dict(zip(samples, tables["data_clinical_sample"]["PATIENT_ID"],
                                 strict=True))
                fixed["PATIENT_ID"] = [owner[s] for s in next(iter(fixed.values()))]
            else:
                fixed["PATIENT_ID"] = list(rng.choice(patients, size=n))
        for gcol in ("Hugo_Symbol", "gene"):
            if gcol not in schema.names:
                continue
            fixed[gcol] = list(rng.permutation(np.array(genes, dtype=object))[:n]) \
                if gcol == "gene" else list(rng.choice(np.array(genes, dtype=object), size=n,
                                                       p=_weights(rng, len(genes))))
        frame = _frame(rng, schema, n, literals, fixed)
        if "Hugo_Symbol" in frame.columns and "mutation" in name:
            # one mutation per gene and patient (oncoprints pivot on the pair)
            by = [c for c in ("Tumor_Sample_Barcode", "PATIENT_ID") if c in frame.columns]
            if by and samples:
                owner = dict(zip(samples, tables["data_clinical_sample"]["PATIENT_ID"],
                                 strict=True)) if "data_clinical_sample" in tables else {}
                key = [owner.get(x, x) for x in frame[by[0]]]
                frame = frame[~frame.assign(_k=key).duplicated(["_k", "Hugo_Symbol"])]
                frame = frame.reset_index(drop=True)
        if "mutation" in name:
            frame = _alleles(rng, frame)
        tables[name] = frame
    return tables


def _alleles(rng: Any, frame: Any) -> Any:
    """Mostly single-nucleotide substitutions, with the first tumour allele the reference
    (as in MAF files), so that every substitution class is common."""
    import numpy as np

    if not {"Reference_Allele", "Tumor_Seq_Allele2"} <= set(frame.columns):
        return frame
    n = len(frame)
    bases = np.array(["A", "C", "G", "T"], dtype=object)
    snv = rng.random(n) < 0.85
    ref = rng.choice(bases, size=n)
    alt = np.array([rng.choice([b for b in bases if b != r]) for r in ref], dtype=object)
    frame = frame.copy()
    frame["Reference_Allele"] = np.where(snv, ref, frame["Reference_Allele"].astype(object))
    frame["Tumor_Seq_Allele2"] = np.where(snv, alt, frame["Tumor_Seq_Allele2"].astype(object))
    if "Tumor_Seq_Allele1" in frame.columns:
        frame["Tumor_Seq_Allele1"] = frame["Reference_Allele"]
    return frame


def _missing_columns(schema: TableSchema, literals: dict[str, set[Any]]) -> list[str]:
    """Numeric columns the code reads that a truncated published schema left out (TMB)."""
    if schema.cols <= len(schema.columns):
        return []
    return sorted(s for s in literals.get("__strings__", set())
                  if isinstance(s, str) and "TMB" in s and s.isupper() and s not in schema.names)


def _gene_pool(schemas: dict[str, TableSchema], literals: dict[str, set[Any]]) -> list[str]:
    genes: list[str] = []
    for schema in schemas.values():
        col = schema.column("Hugo_Symbol")
        if col is not None:
            genes.extend(col.values)
    genes.extend(str(g) for g in sorted(literals.get("Hugo_Symbol", set()), key=str))
    return list(dict.fromkeys(g for g in genes if g and g.lower() != "nan")) or ["TP53"]


def _wide(rng: Any, schema: TableSchema, samples: list[str], genes: list[str],
          published_samples: int, scale: float = 1.0) -> Any:
    """A gene x sample table (``Hugo_Symbol``, optional ``Entrez_Gene_Id``, one column per
    sample) with values from the published sample columns' top values."""
    import numpy as np
    import pandas as pd

    n_genes = max(len(genes), _n(rng, schema.rows, round(MAX_ROWS["genes"] * scale), 20))
    pool_genes = list(genes) + _template_ids(rng, "GENE1000", max(0, n_genes - len(genes)),
                                             set(genes))
    lead = [c for c in schema.names[:2] if c in ("Hugo_Symbol", "Entrez_Gene_Id")]
    frac = (schema.cols - len(lead)) / max(1, published_samples)
    k = len(samples) if frac >= 0.9 else \
        max(3, min(len(samples), round(len(samples) * frac * rng.uniform(0.85, 1.0))))
    cols = list(rng.choice(samples, size=k, replace=False)) if samples else \
        _template_ids(rng, "S-0001", 20)
    values: list[float] = []
    for c in schema.columns[len(lead):]:
        values.extend(x for x in (_number(v) for v in c.values) if x is not None)
    pool = np.array(sorted(set(values)) or [0.0])
    w = np.where(pool == 0, 3.0, 1.0)
    w = w * rng.uniform(0.5, 1.5, size=len(pool))
    w = w / w.sum()
    data: dict[str, Any] = {"Hugo_Symbol": pool_genes}
    if "Entrez_Gene_Id" in lead:
        data["Entrez_Gene_Id"] = list(rng.integers(1, 100000, size=len(pool_genes)))
    for c in cols:
        data[str(c)] = rng.choice(pool, size=len(pool_genes), p=w)
    return pd.DataFrame(data)


def describe(tables: dict[str, Any], data_dir: str) -> str:
    """The prompt's description of the tables actually served (shape, columns, top values)."""
    parts = []
    for name, df in tables.items():
        lines = [f"`{data_dir}/{name}.csv`: {df.shape[0]} rows x {df.shape[1]} columns."]
        cols = list(df.columns)
        shown = cols if len(cols) <= 40 else cols[:40]
        for c in shown:
            top = [v if len(v) <= 40 else v[:37] + "..."
                   for v in df[c].astype(str).value_counts().index[:6].tolist()]
            lines.append(f"  - {c}: e.g. {', '.join(top)}")
        if len(cols) > len(shown):
            more = cols[len(shown):]
            lines.append(f"  - ... and {len(more)} more columns ({', '.join(map(str, more[:60]))}"
                         f"{', ...' if len(more) > 60 else ''})")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
