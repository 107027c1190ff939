"""BioCoder task building: read the function corpora, rebuild each function's context
(imports it needs, helper functions the corpus holds), and generate hidden inputs.

The corpora (``python_public`` / ``python_hidden`` of gersteinlab/BioCoder) hold each target
function's source (``golden``) and counts only (imports, globals, ...): the files the functions
came from are not there. So the context is *rebuilt*:

* every free name of the function (a name it reads that is neither a parameter, a local nor a
  builtin) must resolve to an import from :data:`IMPORTS` (standard library, numpy, pandas,
  scipy, Biopython: what the sandbox has) or to another function of the same corpus with that
  name (the nearest key: neighbouring keys come from the same file) — whose own free names
  resolve the same way;
* anything else (a module-level constant, a class, a helper the corpus does not hold, a package
  the sandbox lacks) excludes the task, with the reason recorded.

Hidden inputs come from generators derived from the parameters' names and their use in the
golden (sequences, counts, probabilities, lists, numpy arrays, pandas Series and DataFrames,
lists of tuples, option dicts read by literal keys, file names, and files staged in the
sandbox for parameters the golden opens: see :func:`param_roles`), seeded by the task id; the golden runs on them *in the sandbox*
(at build time) through the same probes the grader uses, and only inputs on which it returns
(deterministically) are kept.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import random
import re
import symtable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: free name -> the import line that defines it (what the sandbox can import)
IMPORTS: dict[str, str] = {
    **{m: f"import {m}" for m in (
        "re", "os", "sys", "math", "gzip", "bz2", "io", "json", "csv", "itertools",
        "collections", "functools", "string", "random", "logging", "shutil", "glob", "copy",
        "operator", "statistics", "time", "datetime", "warnings", "struct", "hashlib",
        "textwrap", "heapq", "bisect", "fractions", "decimal", "numbers", "types", "typing",
        "pathlib", "tempfile", "zlib", "base64", "array", "enum", "uuid", "difflib",
        "unicodedata", "numpy", "pandas", "scipy", "Bio", "cmath", "fnmatch", "locale",
        "keyword", "traceback", "pickle", "stat", "errno", "platform", "subprocess",
        "sqlite3", "fileinput", "argparse", "urllib", "socket", "multiprocessing")},
    "np": "import numpy as np",
    "pd": "import pandas as pd",
    "defaultdict": "from collections import defaultdict",
    "Counter": "from collections import Counter",
    "OrderedDict": "from collections import OrderedDict",
    "namedtuple": "from collections import namedtuple",
    "deque": "from collections import deque",
    "reduce": "from functools import reduce",
    "partial": "from functools import partial",
    "lru_cache": "from functools import lru_cache",
    "cache": "from functools import cache",
    "chain": "from itertools import chain",
    "combinations": "from itertools import combinations",
    "permutations": "from itertools import permutations",
    "product": "from itertools import product",
    "groupby": "from itertools import groupby",
    "islice": "from itertools import islice",
    "izip": "izip = zip",
    "xrange": "xrange = range",
    "basestring": "basestring = str",
    "unicode": "unicode = str",
    "text_type": "text_type = str",
    "string_types": "string_types = (str,)",
    "iteritems": "def iteritems(d):\n    return iter(d.items())",
    "Decimal": "from decimal import Decimal",
    "Fraction": "from fractions import Fraction",
    "join": "from os.path import join",
    "basename": "from os.path import basename",
    "dirname": "from os.path import dirname",
    "exists": "from os.path import exists",
    "splitext": "from os.path import splitext",
    "getsize": "from os.path import getsize",
    "StringIO": "from io import StringIO",
    "log": "from math import log",
    "log10": "from math import log10",
    "log2": "from math import log2",
    "sqrt": "from math import sqrt",
    "exp": "from math import exp",
    "floor": "from math import floor",
    "ceil": "from math import ceil",
    "pi": "from math import pi",
    "stats": "from scipy import stats",
    "logsumexp": "from scipy.special import logsumexp",
    **{n: f"from scipy.stats import {n}" for n in (
        "scoreatpercentile", "chisquare", "norm", "ttest_ind", "pearsonr", "spearmanr",
        "mannwhitneyu", "fisher_exact", "binom", "poisson", "chi2", "hypergeom", "gmean",
        "zscore", "rankdata", "kendalltau", "linregress", "percentileofscore")},
    "wrap": "from textwrap import wrap",
    "PIPE": "from subprocess import PIPE",
    "TemporaryDirectory": "from tempfile import TemporaryDirectory",
    "NamedTemporaryFile": "from tempfile import NamedTemporaryFile",
    "tarfile": "import tarfile",
    "zipfile": "import zipfile",
    "itemgetter": "from operator import itemgetter",
    "attrgetter": "from operator import attrgetter",
    "savgol_coeffs": "from scipy.signal import savgol_coeffs",
    "LOGGER": "import logging\nLOGGER = logging.getLogger(__name__)",
    "LOG": "import logging\nLOG = logging.getLogger(__name__)",
    "zip_longest": "from itertools import zip_longest",
    "accumulate": "from itertools import accumulate",
    "repeat": "from itertools import repeat",
    "wraps": "from functools import wraps",
    "isfile": "from os.path import isfile",
    "isdir": "from os.path import isdir",
    "abspath": "from os.path import abspath",
    "dedent": "from textwrap import dedent",
    "sklearn": "import sklearn",
    "AgglomerativeClustering": "from sklearn.cluster import AgglomerativeClustering",
    "KMeans": "from sklearn.cluster import KMeans",
    "PCA": "from sklearn.decomposition import PCA",
    "Seq": "from Bio.Seq import Seq",
    "SeqIO": "from Bio import SeqIO",
    "SeqRecord": "from Bio.SeqRecord import SeqRecord",
    "dot": "from numpy import dot",
    "array": "from numpy import array",
    "zeros": "from numpy import zeros",
    "ones": "from numpy import ones",
    "logger": "import logging\nlogger = logging.getLogger(__name__)",
    "_log": "import logging\n_log = logging.getLogger(__name__)",
}
_BUILTINS = set(dir(builtins))
#: parameter names that say "this is not a plain value" (objects, files, handles)
_OPAQUE = re.compile(r"^(self|cls|args|opts|options|config|cfg|ctx|context|parser|conn|db|"
                     r"session|client|logger|log|handle|fh|fp|stream|infile|outfile|file|"
                     r"filename|fname|path|filepath|file_name|file_path|dir|directory|"
                     r"workspace|pipeline|model|node|tree|graph|record|rec|image|img|"
                     r"fig|ax|axes|plot|writer|reader|cursor|request|response)$")


@dataclass
class Function:
    """One corpus function, analysed."""

    key: str
    corpus: str
    source: str
    name: str = ""
    params: list[str] = field(default_factory=list)
    n_required: int = 0
    free: set[str] = field(default_factory=set)
    problem: str | None = None
    #: a method's instance attributes it reads (``self.x``): the grader passes a stand-in
    #: object carrying generated values for them as ``self``; ``None`` for a plain function
    self_attrs: list[str] | None = None
    #: literals the method compares instance attributes with (``self.mode == 'fast'``)
    attr_literals: dict[str, list[Any]] = field(default_factory=dict)


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(key, golden source) pairs of a BioCoder corpus file (column-oriented JSON)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    golden = data["golden"]
    return sorted(((str(k), str(v)) for k, v in golden.items()), key=lambda kv: int(kv[0]))


def _free_names(table: symtable.SymbolTable) -> set[str]:
    out: set[str] = set()
    for sym in table.get_symbols():
        if sym.is_global() or sym.is_declared_global():
            out.add(sym.get_name())
    for child in table.get_children():
        out |= _free_names(child)
    return out


def analyse(key: str, corpus: str, source: str) -> Function:
    fn = Function(key=key, corpus=corpus, source=source)
    try:
        mod = ast.parse(source)
    except SyntaxError as exc:
        fn.problem = f"the golden does not parse ({exc.msg})"
        return fn
    defs = [n for n in mod.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if len(mod.body) != 1 or len(defs) != 1:
        fn.problem = "the golden is not one function definition"
        return fn
    node = defs[0]
    fn.name = node.name
    if isinstance(node, ast.AsyncFunctionDef):
        fn.problem = "coroutine function"
        return fn
    decorators = [ast.unparse(d) for d in node.decorator_list]
    if decorators in (["staticmethod"], ["property"]):
        # a static method stands alone without its class; a property is a method of self
        fn.source = "\n".join(ln for ln in source.splitlines()
                              if ln.strip() != f"@{decorators[0]}") + "\n"
        return analyse(key, corpus, fn.source)
    extra_free: set[str] = set()
    for d in decorators:
        if re.fullmatch(r"(functools\.)?(lru_cache|cache)(\(.*\))?", d):
            extra_free.add(d.split(".")[0].split("(")[0])
        else:
            fn.problem = f"decorated function (@{d[:40]} is not in the corpus)"
            return fn
    a = node.args
    fn.params = [p.arg for p in (*a.posonlyargs, *a.args)]
    fn.n_required = len(fn.params) - len(a.defaults)
    if fn.params and fn.params[0] in ("self", "cls"):
        attrs, why = instance_use(node, fn.params[0])
        if why:
            fn.problem = f"method: {why}"
            return fn
        fn.self_attrs = attrs
        fn.attr_literals = attribute_literals(node, fn.params[0])
    try:
        table = symtable.symtable(source, "<golden>", "exec")
    except SyntaxError as exc:
        fn.problem = f"the golden does not compile ({exc.msg})"
        return fn
    fn.free = (_free_names(table.get_children()[0]) | extra_free) - _BUILTINS - {fn.name}
    if any(isinstance(n, ast.Global | ast.Nonlocal) for n in ast.walk(node)):
        fn.problem = "writes module-level state (global)"
    return fn


def instance_use(node: ast.FunctionDef, me: str) -> tuple[list[str], str | None]:
    """The attributes a method reads from its instance ``me``, or why its instance cannot be
    stood in for (it calls other methods of its class, or uses the instance otherwise)."""
    attrs: dict[str, None] = {}
    parents: dict[int, ast.AST] = {}
    for n in ast.walk(node):
        for child in ast.iter_child_nodes(n):
            parents[id(child)] = n
    uses = sorted((n for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == me),
                  key=lambda n: (n.lineno, n.col_offset))  # in source order
    for n in uses:
        if isinstance(n.ctx, ast.Store | ast.Del):
            return [], f"rebinds its instance ({me})"
        parent = parents.get(id(n))
        if not (isinstance(parent, ast.Attribute) and parent.value is n):
            return [], f"uses its instance ({me}) beyond reading its attributes"
        grand = parents.get(id(parent))
        if isinstance(grand, ast.Call) and grand.func is parent:
            return [], f"calls another method of its class ({me}.{parent.attr}())"
        if parent.attr.startswith("__"):
            return [], f"reads a private attribute ({me}.{parent.attr})"
        if isinstance(parent.ctx, ast.Load):
            # one level of nesting (``self.setting.value``) becomes a nested stand-in
            if (isinstance(grand, ast.Attribute) and grand.value is parent
                    and not grand.attr.startswith("_")
                    and not (isinstance(parents.get(id(grand)), ast.Call)
                             and parents[id(grand)].func is grand)):
                attrs.setdefault(f"{parent.attr}.{grand.attr}")
            else:
                attrs.setdefault(parent.attr)
    flat = {a for a in attrs if "." not in a}
    if any(a.split(".")[0] in flat for a in attrs if "." in a):
        return [], f"reads {me}.x both as a value and as an object"
    return list(attrs), None


def attribute_literals(node: ast.FunctionDef, me: str) -> dict[str, list[Any]]:
    """Constants an instance attribute is compared with (``self.x.value == 'A'``,
    ``self.x in ('a', 'b')``): the stand-in draws its values from them."""
    def path(n: ast.AST) -> str | None:
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == me:
            return n.attr
        if isinstance(n, ast.Attribute) and (head := path(n.value)) and "." not in head:
            return f"{head}.{n.attr}"
        return None

    def consts(n: ast.AST) -> list[Any]:
        if isinstance(n, ast.Constant) and isinstance(n.value, str | int | float) \
                and not isinstance(n.value, bool):
            return [n.value]
        if isinstance(n, ast.Tuple | ast.List | ast.Set):
            return [v for e in n.elts for v in consts(e)]
        return []

    out: dict[str, list[Any]] = {}
    for n in ast.walk(node):
        if isinstance(n, ast.Compare):
            sides = [n.left, *n.comparators]
            for a in sides:
                if (key := path(a)):
                    for b in sides:
                        for v in consts(b):
                            if v not in out.setdefault(key, []):
                                out[key].append(v)
    return out


@dataclass
class Context:
    """What a function needs around it: import lines and helper functions."""

    imports: list[str]
    helpers: list[Function]
    problem: str | None = None


def resolve_context(fn: Function, by_name: dict[str, list[Function]]) -> Context:
    """The imports and corpus helpers ``fn`` needs; ``problem`` names what cannot resolve.
    The target itself is never a helper (its name is removed everywhere)."""
    imports: list[str] = []
    helpers: list[Function] = []
    seen = {fn.name}
    todo = [fn]
    while todo:
        cur = todo.pop(0)
        for name in sorted(cur.free):
            if name in seen:
                continue
            seen.add(name)
            if name in IMPORTS:
                line = IMPORTS[name]
                if line not in imports:
                    imports.append(line)
                continue
            if re.fullmatch(r"[A-Z]\w*(Error|Exception)", name) and name not in by_name:
                # a project's own exception class: its definition is one line
                imports.append(f"class {name}(Exception):\n    pass")
                continue
            cands = [h for h in by_name.get(name, ()) if h.problem is None and h is not fn]
            if not cands:
                return Context(imports, helpers, f"undefined name {name!r} (a module global, "
                                                 "class or helper the corpus does not hold)")
            helper = min(cands, key=lambda h: abs(int(h.key) - int(fn.key)))
            helpers.append(helper)
            todo.append(helper)
    return Context(imports, helpers)


#: NumPy 1 names removed in NumPy 2 that goldens use -> what they were
NUMPY_SHIMS = {"float_": "_np.float64", "complex_": "_np.complex128", "NaN": "_np.nan",
               "NAN": "_np.nan", "Inf": "_np.inf", "Infinity": "_np.inf",
               "product": "_np.prod", "cumproduct": "_np.cumprod", "alltrue": "_np.all",
               "sometrue": "_np.any", "string_": "_np.bytes_", "unicode_": "_np.str_",
               "int": "int", "float": "float", "bool": "bool", "object": "object",
               "asfarray": "lambda a, dtype=_np.float64: _np.asarray(a, dtype)"}
_NUMPY_REMOVED = re.compile(r"\b(?:np|numpy)\.(" + "|".join(NUMPY_SHIMS) + r")\b(?!\.)")


def numpy_shims(source: str) -> str:
    """Lines restoring the NumPy 1 aliases ``source`` uses (``np.float_``, ``np.asfarray``,
    ...): the sandbox has NumPy 2, where they are gone."""
    used = sorted(set(_NUMPY_REMOVED.findall(source)))
    if not used:
        return ""
    lines = ["import numpy as _np  # NumPy 1 aliases the code below uses"]
    lines.extend(f"_np.{name} = {NUMPY_SHIMS[name]}" for name in used)
    return "\n".join(lines) + "\n"


def context_source(ctx: Context) -> str:
    parts = []
    if ctx.imports:
        parts.append("\n".join(ctx.imports))
    parts.extend(h.source.rstrip() for h in ctx.helpers)
    return "\n\n\n".join(parts) + ("\n" if parts else "")


def prompt_stub(fn: Function) -> str:
    """The signature and docstring (and leading comments) of the target, body elided."""
    node = ast.parse(fn.source).body[0]
    assert isinstance(node, ast.FunctionDef)
    lines = fn.source.splitlines()
    body_start = node.body[0]
    doc = ast.get_docstring(node, clean=False)
    sig_end = body_start.lineno - 1  # lines before the first statement: the signature
    head = lines[:sig_end]
    if doc is not None and isinstance(body_start, ast.Expr):
        head = lines[:body_start.end_lineno]
    comments = [ln for ln in lines[len(head):] if ln.strip().startswith("#")]
    indent = " " * (body_start.col_offset or 4)
    return "\n".join([*head, *comments[:10], f"{indent}...  # your implementation"]) + "\n"


# --------------------------------------------------------------------------- categories

#: the closest documented taxonomy: BioCoder's paper reports 8 topic groups of the mined
#: functions without publishing per-function labels; these keyword rules place each function
#: in one of eight groups (first match wins, on the name and the docstring)
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("sequence analysis", re.compile(
        r"seq|dna|rna|codon|kmer|k_mer|nucleot|base|gc|revcomp|reverse_comp|translat|"
        r"protein|amino|peptide|primer|motif|orf", re.I)),
    ("alignment and variants", re.compile(
        r"align|cigar|sam|bam|vcf|variant|snp|allele|genotyp|mutation|indel|read", re.I)),
    ("genomic intervals and annotation", re.compile(
        r"interval|region|chrom|gene|exon|intron|bed|gff|gtf|coordinate|locus|position|"
        r"range|overlap", re.I)),
    ("statistics and numerics", re.compile(
        r"stat|mean|median|std|var|prob|pvalue|p_value|score|likelihood|entropy|log|"
        r"normal|distribution|matrix|vector|correl|regress|fit|sum|count|freq", re.I)),
    ("file formats and parsing", re.compile(
        r"pars|read|write|file|fasta|fastq|header|line|format|csv|json|xml|record|load", re.I)),
    ("phylogenetics, structures and networks", re.compile(
        r"tree|phylo|newick|clade|node|graph|network|pdb|atom|residue|structure|mass|mz|"
        r"spectr|molec", re.I)),
    ("strings and formatting", re.compile(
        r"str|name|text|label|format|pad|split|join|char|word|token|regex|escape", re.I)),
    ("utilities and data structures", re.compile(r".", re.S)),
]


def category_of(fn: Function) -> str:
    node = ast.parse(fn.source).body[0]
    doc = ast.get_docstring(node) if isinstance(node, ast.FunctionDef) else None
    text = f"{fn.name} {doc or ''}"
    for cat, pat in CATEGORIES:
        if pat.search(fn.name):
            return cat
    for cat, pat in CATEGORIES:
        if pat.search(text):
            return cat
    return CATEGORIES[-1][0]


# --------------------------------------------------------------------------- inputs

_KINDS = ("dna", "protein", "int", "float", "str", "list_int", "list_float", "list_dna",
          "list_str", "bool", "dict")
_NAME_KINDS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"(seqs|sequences|reads|kmers|primers|motifs|strands)$"), ("list_dna",)),
    (re.compile(r"(protein|peptide|aa_seq|aa|prot)"), ("protein", "str")),
    (re.compile(r"(seq|dna|rna|kmer|codon|primer|motif|genome|strand|read|pattern|"
                r"nucleotide|bases?)$|^(s|t|s1|s2|seq1|seq2)$"), ("dna", "str")),
    (re.compile(r"(names|labels|words|lines|ids|strings|keys|headers|tokens|columns|cols)$"),
     ("list_str",)),
    (re.compile(r"(values|scores|data|counts|array|arr|numbers|nums|xs|ys|lst|list|vector|"
                r"weights|intensities|vals|freqs|depths|positions|coverage|x_list|signal|"
                r"samples|ratios|logs|pvals|pvalues|probs|sizes|lengths)$"),
     ("list_float", "list_int")),
    (re.compile(r"^(n|k|m|l|i|j|num|length|size|count|start|end|stop|pos|position|width|"
                r"window|len|index|idx|offset|depth|step|ncol|nrow|level|order|copies|"
                r"ploidy|min_\w+|max_\w+|n_\w+|num_\w+|\w+_len|\w+_length|\w+_size|"
                r"\w+_count|\w+_index|\w+_idx|\w+_start|\w+_end|\w+_pos)$"), ("int", "float")),
    (re.compile(r"(p|prob|rate|threshold|thresh|frac|fraction|pvalue|pval|evalue|alpha|"
                r"beta|value|x|y|z|weight|ratio|percent|pct|mass|mz|tol|tolerance|score|"
                r"val|q|quality|mean|sd|std|sigma|mu|lambda_|a|b|c|d)$"),
     ("float", "int")),
    (re.compile(r"^(is_|use_|do_|flag|verbose|reverse|strict|strand|paired|keep|"
                r"include|ignore)"), ("bool",)),
    (re.compile(r"(dict|mapping|map|table|lookup|counts_by|d)$"), ("dict",)),
    (re.compile(r"(name|label|id|word|string|text|header|line|key|chrom|chr|char|"
                r"sep|delim|prefix|suffix|ext|extension|fmt|format|mode|unit|tag|"
                r"sample|title|token|version|cigar|strand_char)$"), ("str",)),
]


def kinds_for(param: str) -> tuple[str, ...]:
    p = param.lower()
    for pat, kinds in _NAME_KINDS:
        if pat.search(p):
            return kinds
    return ("str", "int", "float", "list_int", "dna")


def _dna(rng: random.Random, lo: int = 3, hi: int = 24) -> str:
    return "".join(rng.choice("ACGT") for _ in range(rng.randint(lo, hi)))


def _word(rng: random.Random) -> str:
    pools = ["chr1", "gene_A", "sample-7", "TP53", "seq_12", "read/1", "alpha", "BRCA2",
             "x.fastq", "ACGT", "a b c", "E_coli", "HLA-A*02:01", "10", "3.5", "chrX:100-200",
             "id|42|x", "Contig_9", "N", "exon2"]
    return rng.choice(pools) if rng.random() < 0.7 else _dna(rng, 1, 8).lower() + str(
        rng.randint(0, 99))


def make_value(kind: str, rng: random.Random, size: int | None = None) -> Any:
    if kind == "dna":
        return _dna(rng)
    if kind == "protein":
        return "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(3, 20)))
    if kind == "int":
        return rng.choice([rng.randint(0, 5), rng.randint(1, 12), rng.randint(2, 40)])
    if kind == "float":
        return round(rng.choice([rng.random(), rng.uniform(0, 10), rng.uniform(-5, 5)]), 4)
    if kind == "str":
        return _word(rng)
    if kind == "list_int":
        return [rng.randint(0, 20) for _ in range(size or rng.randint(2, 8))]
    if kind == "list_float":
        return [round(rng.uniform(0, 10), 3) for _ in range(size or rng.randint(2, 8))]
    if kind == "list_dna":
        return [_dna(rng, 3, 12) for _ in range(rng.randint(2, 5))]
    if kind == "list_str":
        return [_word(rng) for _ in range(rng.randint(2, 5))]
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "dict":
        return {_dna(rng, 1, 3): rng.randint(0, 9) for _ in range(rng.randint(1, 4))}
    raise ValueError(kind)


_ARRAY_ATTRS = {"ndim", "shape", "dtype", "copy", "max", "min", "sum", "mean", "astype", "T",
                "reshape", "flatten", "ravel", "size", "any", "all", "argmax", "argmin",
                "nonzero", "std", "cumsum", "tolist", "fill", "clip", "round", "diagonal",
                "transpose", "dot", "squeeze", "argsort", "prod", "var", "ptp", "item",
                "take", "trace", "nbytes", "itemsize", "swapaxes"}
_STR_ATTRS = {"split", "upper", "lower", "strip", "rstrip", "lstrip", "startswith",
              "endswith", "replace", "find", "rfind", "format", "encode", "isdigit", "isalpha",
              "partition", "rpartition", "splitlines", "title", "capitalize", "translate",
              "zfill", "ljust", "rjust", "center", "isupper", "islower", "casefold"}
_DICT_ATTRS = {"items", "keys", "values", "get", "setdefault", "update"}
_LIST_ATTRS = {"append", "extend", "sort", "pop", "insert", "remove", "reverse"}
_NUMERIC_MODULES = {"np", "numpy", "scipy", "stats", "math", "statistics"}
_SERIES_ATTRS = {"iloc", "median", "abs", "isnull", "notnull", "isna", "notna", "dropna",
                 "fillna", "unique", "nunique", "value_counts", "idxmax", "idxmin", "shift",
                 "diff", "rolling", "quantile", "rank", "cumprod"}
_FRAME_ATTRS = {"columns", "iterrows", "itertuples", "groupby", "merge", "loc",
                "sort_values", "set_index", "reset_index", "query", "assign"}
_STR_ATTRS |= {"index", "count", "isalnum", "isspace", "expandtabs"}


def usage_kinds(fn: Function) -> dict[str, list[str]]:
    """Kinds each parameter's *use* in the golden suggests (strongest evidence first)."""
    node = ast.parse(fn.source).body[0]
    params = set(fn.params)
    votes: dict[str, dict[str, int]] = {p: {} for p in fn.params}

    def vote(p: str, *kinds: str, w: int = 1) -> None:
        for k in kinds:
            votes[p][k] = votes[p].get(k, 0) + w

    def name_of(n: ast.AST) -> str | None:
        return n.id if isinstance(n, ast.Name) and n.id in params else None

    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and (p := name_of(n.value)):
            if n.attr in _ARRAY_ATTRS:
                vote(p, "array_int2d", "array_float", w=3)
            if n.attr in _STR_ATTRS:
                vote(p, "str_like", w=3)
            if n.attr in _DICT_ATTRS:
                vote(p, "dict", w=3)
            if n.attr in _LIST_ATTRS:
                vote(p, "list_like", w=3)
            if n.attr in _SERIES_ATTRS:
                vote(p, "series_float", w=3)
            if n.attr in _FRAME_ATTRS:
                vote(p, "frame", w=4)
        elif isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and f.attr == "split" and n.args and (
                    p := name_of(f.value)) and _const_str(n.args[0]) and \
                    _const_str(n.args[0]) != "\n":
                vote(p, "str_split", w=4)  # param.split(','): a delimited string
            if isinstance(f, ast.Attribute) and (p := name_of(f.value)) and (
                    f.attr == "splitlines" or any(_const_str(a) in ("\n", "\t")
                                                  for a in n.args)):
                vote(p, "text_table", w=5)  # text.index('\n'): a multi-line text
            fname = f.id if isinstance(f, ast.Name) else None
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(
                f.value, ast.Name) else None
            if isinstance(f, ast.Attribute) and f.attr == "join" and n.args and (
                    p := name_of(n.args[0])):
                vote(p, "list_str", w=2)
            for a in n.args:
                if not (p := name_of(a)):
                    continue
                if fname == "range":
                    vote(p, "int", w=3)
                elif fname in ("len", "sorted", "set", "enumerate", "reversed", "list", "zip"):
                    vote(p, "seq", w=1)
                elif fname in ("float", "int", "round", "abs"):
                    vote(p, "number", w=1)
                elif fname in ("min", "max", "sum") and len(n.args) == 1:
                    vote(p, "list_float", "list_int", w=2)
                elif base in _NUMERIC_MODULES or (
                        isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute)):
                    vote(p, "array_float", "list_float", w=2)
                elif isinstance(f, ast.Attribute) and f.attr in ("sub", "match", "search",
                                                                  "findall", "split"):
                    vote(p, "str_like", w=2)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Subscript) and (
                p := name_of(n.target.value)):
            vote(p, "counter", w=4)
        elif isinstance(n, ast.BinOp):
            for side in (n.left, n.right):
                if (p := name_of(side)):
                    other = n.right if side is n.left else n.left
                    if isinstance(other, ast.Constant) and isinstance(other.value, int | float):
                        vote(p, "number", w=2)
                    if isinstance(other, ast.Constant) and isinstance(other.value, str):
                        vote(p, "str_like", w=2)
                    elif not isinstance(other, ast.Constant | ast.JoinedStr):
                        vote(p, "arith", w=1)  # computed with another value
        elif isinstance(n, ast.Compare):
            for side in (n.left, *n.comparators):
                if (p := name_of(side)):
                    for other in (n.left, *n.comparators):
                        if isinstance(other, ast.Constant) and isinstance(
                                other.value, int | float) and not isinstance(other.value, bool):
                            vote(p, "number", w=2)
                        if isinstance(other, ast.Constant) and isinstance(other.value, str):
                            vote(p, "str_like", w=2)
        elif isinstance(n, ast.For | ast.comprehension) and (
                p := name_of(n.iter.value if isinstance(n.iter, ast.Subscript) else n.iter)):
            if isinstance(n.target, ast.Tuple) and 1 < len(n.target.elts) < 7:
                vote(p, f"list_tuple{len(n.target.elts)}", w=4)  # for a, b in param
            else:
                vote(p, "seq", w=2)
        elif isinstance(n, ast.Subscript) and isinstance(n.value, ast.Subscript) and (
                p := name_of(n.value.value)):
            vote(p, "list_tuple2", w=2)  # param[i][j]
        elif isinstance(n, ast.Subscript) and (p := name_of(n.value)):
            if isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
                vote(p, "dict", w=3)
            elif isinstance(n.slice, ast.Tuple):
                vote(p, "array_int2d", w=2)
            else:
                vote(p, "seq", w=1)
    out: dict[str, list[str]] = {}
    for p, v in votes.items():
        out[p] = [k for k, _ in sorted(v.items(), key=lambda kv: -kv[1])]
    return out


def _expand(abstract: str, param: str) -> list[str]:
    """Concrete kinds for an abstract one, ordered by the parameter's name."""
    named = list(kinds_for(param))
    if abstract == "str_like":
        return [k for k in named if k in ("dna", "protein", "str")] or ["str", "dna"]
    if abstract == "seq":
        return [k for k in named if k.startswith("list") or k in ("dna", "str", "protein")] or [
            "list_int", "dna", "list_str"]
    if abstract == "list_like":
        return [k for k in named if k.startswith("list")] or ["list_int", "list_str"]
    if abstract == "number":
        return [k for k in named if k in ("int", "float")] or ["int", "float"]
    if abstract == "arith":
        return []  # evidence only (with indexing: an array)
    return [abstract]


def param_kinds(fn: Function) -> dict[str, list[str]]:
    """Concrete kinds to try per required parameter, best first (use, then name)."""
    usage = usage_kinds(fn)
    roles = param_roles(fn)
    out: dict[str, list[str]] = {}
    for p in fn.params[:fn.n_required]:
        if p in roles and p not in ("self", "cls"):
            image = (["array_int2d", "array_float2d"] if "label" in p.lower()
                     else ["array_float2d", "array_int2d"])
            out[p] = image if roles[p] == "image" else [roles[p]]
            continue
        kinds: list[str] = []
        for a in usage.get(p, []):
            kinds.extend(k for k in _expand(a, p) if k not in kinds)
        kinds.extend(k for k in kinds_for(p) if k not in kinds)
        kinds.extend(k for k in ("str", "int", "list_int", "float", "dna") if k not in kinds)
        kinds = kinds[:4]
        used = usage.get(p, [])
        if "seq" in used and ("number" in used or "arith" in used) and \
                "array_float" not in kinds[:1]:
            kinds = [k for k in kinds if k != "array_float"]
            kinds.insert(0, "array_float")  # indexed and computed with: a numpy array
        if "array_float" not in kinds and any(k in ("list_float", "list_int")
                                              for k in kinds[:2]):
            kinds.insert(1, "array_float")  # numeric lists are often numpy arrays
        out[p] = kinds[:4]
    return out


def candidate_inputs(fn: Function, seed: str, n: int = 60) -> list[list[str]]:
    """``n`` argument lists (Python expressions) for the required parameters of ``fn``:
    combinations of each parameter's likely kinds, most for the likeliest (deterministic in
    ``seed``)."""
    rng = random.Random(seed)
    kinds = param_kinds(fn)
    hints = file_hints(fn)
    if fn.self_attrs is not None:  # the instance: a stand-in object, generated per call
        kinds.pop(fn.params[0], None)
    params = list(kinds)
    combos: list[tuple[str, ...]] = [tuple(kinds[p][0] for p in params)]
    for j, p in enumerate(params):
        for alt in kinds[p][1:]:
            c = list(combos[0])
            c[j] = alt
            combos.append(tuple(c))
    for _ in range(8):
        combos.append(tuple(rng.choice(kinds[p]) for p in params))
    combos = list(dict.fromkeys(combos))
    out: list[list[str]] = []
    seen: set[str] = set()
    per = max(6, n // len(combos))
    for c in combos:
        for _ in range(per * 2):
            if len(out) >= n or sum(1 for _ in seen) >= n:
                break
            # 2-D arrays of one call agree (three columns: genotype probabilities, RGB)
            shape = (rng.randint(3, 6), rng.choice([2, 3, 3, 4, 5, 6]))
            args = [namespace_expr(fn, p, rng) if k == "namespace"
                    else make_expr(k, rng, hints, p, shape)
                    for k, p in zip(c, params, strict=True)]
            if fn.self_attrs is not None:
                args.insert(0, instance_expr(fn.self_attrs, rng, fn.attr_literals))
            key = repr(args)
            if key not in seen:
                seen.add(key)
                out.append(args)
                if len(out) % per == 0:
                    break
        if len(out) >= n:
            break
    return out


# --------------------------------------------------------------------------- files and paths

#: calls whose first argument is a path the golden reads (``open(p)``, ``pd.read_csv(p)``,
#: ``SeqIO.parse(p, 'fasta')``, ``os.path.exists(p)``, ``fileinput.input(p)``, ...)
_FILE_CALLS = {"open", "read_csv", "read_table", "read_fwf", "loadtxt", "genfromtxt", "parse",
               "read", "input", "exists", "isfile", "getsize", "Path", "index", "FastaFile",
               "TabixFile"}
_PATH_NAME = re.compile(r"(^|_)(path|file|filename|fname|fn|infile|filepath|file_name|"
                        r"file_path|filepath|inpath|in_file|input_file)$|(_fn|_file|_path|"
                        r"filename)$")
_DICT_NAME = re.compile(r"^(args|opts|options|config|cfg|params|settings|kwargs_dict)$")
_IMAGE_NAME = re.compile(r"^(image|img|pixels|pixel_data|labels|labeled_image|mask|"
                         r"label_image|labels_[xy]|matrix|mat|grid|probs)$")
#: where a probe stages an input file (one per case, named by the task's seed)
FILE_DIR = "/tmp"
FILE_PREFIX = "_bc_"


def _const_str(n: ast.AST) -> str | None:
    return n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None


def param_roles(fn: Function) -> dict[str, str]:
    """Parameters that are not plain values: ``file`` (a path the golden opens: the probe
    stages a file), ``path`` (a file name the golden only takes apart), ``image`` (a 2-D
    array), ``dict_lit`` (an options mapping read by literal keys)."""
    node = ast.parse(fn.source).body[0]
    params = fn.params[:fn.n_required]
    roles: dict[str, str] = {}
    keyed: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else None
            if fname in _FILE_CALLS and n.args and isinstance(n.args[0], ast.Name) \
                    and n.args[0].id in params:
                roles[n.args[0].id] = "file"
            if isinstance(f, ast.Attribute) and f.attr == "get" and isinstance(
                    f.value, ast.Name) and n.args and _const_str(n.args[0]) is not None:
                keyed.add(f.value.id)
        elif isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and \
                _const_str(n.slice) is not None:
            keyed.add(n.value.id)
    for p in params:
        if p in roles or p in ("self", "cls"):
            continue
        low = p.lower()
        if low in ("log", "logger", "_log", "lg") and _logger_use(node, p):
            roles[p] = "logger"
        elif _OPAQUE.match(low) and not _PATH_NAME.search(low) and p not in keyed and \
                _namespace_attrs(node, p):
            roles[p] = "namespace"  # attributes read only: a stand-in object
        elif _PATH_NAME.search(low):
            roles[p] = "path"
        elif _IMAGE_NAME.match(low):
            roles[p] = "image"
        elif _DICT_NAME.match(low) and p in keyed:
            roles[p] = "dict_lit"
    return roles


_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def _logger_use(node: ast.FunctionDef, p: str) -> bool:
    """``p`` is only used to log (``p.info(...)``)."""
    uses = [n for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == p]
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == p and n.attr in _LOG_METHODS]
    return bool(uses) and len(calls) == len(uses)


def _namespace_attrs(node: ast.FunctionDef, p: str) -> list[str] | None:
    """The attributes ``p`` is read for, when it is used for nothing else."""
    attrs, why = instance_use(node, p)
    return attrs if why is None and attrs else None


def namespace_expr(fn: Function, p: str, rng: random.Random) -> str:
    node = ast.parse(fn.source).body[0]
    assert isinstance(node, ast.FunctionDef)
    return instance_expr(_namespace_attrs(node, p) or [], rng, attribute_literals(node, p))


@dataclass
class FileHints:
    """What the golden's code says about the files it reads."""

    formats: list[str]
    seps: list[str]
    words: list[str]
    prefixes: list[str]
    exts: list[str]
    keys: dict[str, list[str]]
    ncol: int
    #: the separators the golden splits strings on, in order of appearance
    splits: list[str] = field(default_factory=list)


_NOT_WORDS = {"r", "w", "rb", "wb", "rt", "wt", "a", "utf-8", "utf8", "ascii", "fasta",
              "fastq", "fq", "fa", "gz", "strict", "ignore", "replace", "index", "columns",
              "records", "c", "python", "infer", "left", "right", "inner", "outer", "first",
              "last", "all", "any", "float", "int", "str", "object", "category", "bool"}


def file_hints(fn: Function) -> FileHints:
    node = ast.parse(fn.source).body[0]
    consts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
    strs = [c for c in consts if isinstance(c, str)]
    formats = []
    if any(s.lower() in ("fasta", "fa") for s in strs) or ">" in strs:
        formats.append("fasta")
    if any(s.lower() in ("fastq", "fq") for s in strs):
        formats.append("fastq")
    seps = [s for s in ("\t", ",", " ", ";", "|") if s in strs]
    prefixes: list[str] = []
    keys: dict[str, list[str]] = {}
    maxidx = 0
    splits: list[str] = []
    for n in sorted((n for n in ast.walk(node) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Attribute) and n.func.attr == "split"
                     and n.args), key=lambda n: (n.lineno, n.col_offset)):
        if (v := _const_str(n.args[0])) and v not in splits:
            splits.append(v)
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            if n.func.attr == "split" and not n.args and " " not in seps:
                seps.append(" ")
            if n.func.attr == "startswith" and n.args:
                for c in ast.walk(n.args[0]):
                    if (v := _const_str(c)) and v not in prefixes and len(v) < 20:
                        prefixes.append(v)
            if n.func.attr == "get" and isinstance(n.func.value, ast.Name) and n.args and (
                    v := _const_str(n.args[0])) is not None:
                keys.setdefault(n.func.value.id, []).append(v)
            for kw in n.keywords:
                if kw.arg == "delim_whitespace" and " " not in seps:
                    seps.append(" ")
        if isinstance(n, ast.Subscript):
            if isinstance(n.value, ast.Name) and (v := _const_str(n.slice)) is not None:
                keys.setdefault(n.value.id, []).append(v)
            if isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, int) and \
                    not isinstance(n.slice.value, bool) and 0 <= n.slice.value < 12:
                maxidx = max(maxidx, n.slice.value)
    if ">" in prefixes and "fasta" not in formats:
        formats.append("fasta")
    words = [s for s in dict.fromkeys(strs) if re.fullmatch(r"[A-Za-z_][\w.*#-]{0,24}", s)
             and s.lower() not in _NOT_WORDS and not s.startswith(".")]
    exts = [s for s in dict.fromkeys(strs) if re.fullmatch(r"\.[A-Za-z0-9_.]{1,24}", s)]
    return FileHints(formats, seps, words[:12], prefixes[:4], exts[:8],
                     {k: list(dict.fromkeys(v))[:8] for k, v in keys.items()}, maxidx + 1,
                     splits[:3])


def _cell(kind: str, rng: random.Random) -> str:
    if kind == "int":
        return str(rng.randint(0, 500))
    if kind == "float":
        return f"{rng.uniform(0, 10):.3f}"
    if kind == "dna":
        return _dna(rng, 1, 10)
    if kind == "chr":
        return rng.choice(["chr1", "chr2", "chrX", "1", "2", "22"])
    return re.sub(r"\s", "_", _word(rng))


def file_text(h: FileHints, rng: random.Random) -> tuple[str, str]:
    """The content (and a file extension) of one staged input file."""
    fmt = rng.choice([*h.formats, *h.formats, "table", "table", "lines"])
    if fmt == "fasta":
        recs = [f">{_word(rng).replace(' ', '_')}_{i} desc{i}\n{_dna(rng, 4, 60)}"
                for i in range(rng.randint(1, 4))]
        return ".fa", "\n".join(recs) + "\n"
    if fmt == "fastq":
        out = []
        for i in range(rng.randint(1, 4)):
            s = _dna(rng, 4, 30)
            q = "".join(chr(rng.randint(35, 73)) for _ in s)
            out.append(f"@read{i}_{rng.randint(1, 9)}\n{s}\n+\n{q}")
        return ".fq", "\n".join(out) + "\n"
    if fmt == "lines":
        return ".txt", "".join(f"{_cell(rng.choice(['word', 'int', 'dna']), rng)}\n"
                               for _ in range(rng.randint(1, 6)))
    sep = rng.choice(h.seps or ["\t", " ", ","])
    header = rng.random() < 0.6 and bool(h.words)
    ncol = max(h.ncol, min(len(h.words), 8) if header else 0, rng.randint(2, 6)) \
        + rng.choice([0, 0, 1])
    kinds = [rng.choices(["int", "float", "word", "chr", "dna"], [5, 3, 3, 1, 1])[0]
             for _ in range(ncol)]
    lines = []
    if h.prefixes and rng.random() < 0.5:
        lines.append(sep.join([rng.choice(h.prefixes).rstrip(sep) or "#",
                               *(f"col{j}" for j in range(1, ncol))]))
    if header:
        words = list(h.words)
        if rng.random() < 0.5:
            rng.shuffle(words)
        lines.append(sep.join((words + [f"col{j}" for j in range(ncol)])[:ncol]))
    for _ in range(rng.randint(2, 6)):
        lines.append(sep.join(_cell(k, rng) for k in kinds))
    ext = {"\t": ".tsv", ",": ".csv"}.get(sep, ".txt")
    return ext, "\n".join(lines) + "\n"


def file_expr(h: FileHints, rng: random.Random) -> str:
    """An argument expression that writes a staged file (in the sandbox, when the probe runs)
    and evaluates to its path."""
    ext, text = file_text(h, rng)
    path = f"{FILE_DIR}/{FILE_PREFIX}{rng.getrandbits(40):010x}{ext}"
    return (f"(lambda p: (p.write_text({text!r}), str(p))[1])"
            f"(__import__('pathlib').Path({path!r}))")


def staged_text(arg: str) -> str | None:
    """The text a staging argument (from :func:`file_expr`) writes, else ``None``."""
    if "write_text(" not in arg:
        return None
    try:
        call = ast.parse(arg, mode="eval").body
    except SyntaxError:
        return None
    for n in ast.walk(call):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                n.func.attr == "write_text" and n.args and (v := _const_str(n.args[0])) is not None:
            return v
    return None


def file_shortcuts(text: str) -> list[Any]:
    """Values a function could return from a staged file without doing its job: its size,
    its first line (with and without the newline), its content, its lines."""
    lines = text.splitlines()
    first = text.splitlines(True)[0] if text else ""
    return [len(text.encode()), len(text), first, first.rstrip("\n"), text, lines,
            len(lines)]


def path_value(h: FileHints, rng: random.Random) -> str:
    exts = [*h.exts, ".txt", ".fastq", ".fq.gz", ".fasta", ".fa.bz2", ".bam", ".vcf.gz"]
    base = rng.choice(["sample1", "chr22.1_50000", "reads_R1", "TP53", "run-7", "x"])
    if h.words and rng.random() < 0.3:
        base = rng.choice(h.words)
    head = rng.choice(["", "", "data/", "/home/u/run1/", "./out/"])
    tail = rng.choice(exts) + (rng.choice(exts) if rng.random() < 0.15 else "")
    return head + base + tail


def dict_lit_expr(keys: list[str], rng: random.Random) -> str:
    vals = [True, False, None, 0, 1, 2, 5, "x"]
    d = {k: rng.choice(vals) for k in keys if rng.random() < 0.85}
    return repr(d)


def make_expr(kind: str, rng: random.Random, hints: FileHints | None = None,
              param: str = "", shape: tuple[int, int] | None = None) -> str:
    """A Python expression for a value of ``kind`` (literals, or numpy / collections
    constructors reached through ``__import__``; staged files for ``file``)."""
    if kind == "logger":
        return "__import__('logging').getLogger('biocoder.task')"
    if kind in ("file", "path", "dict_lit"):
        h = hints or FileHints([], [], [], [], [], {}, 1)
        if kind == "file":
            return file_expr(h, rng)
        if kind == "path":
            return repr(path_value(h, rng))
        return dict_lit_expr(h.keys.get(param, []), rng)
    if kind == "array_float2d":
        r, c = shape or (rng.randint(3, 6), rng.randint(3, 6))
        rows = [[round(rng.random(), 3) for _ in range(c)] for _ in range(r)]
        return f"__import__('numpy').array({rows!r})"
    if kind == "array_int2d":
        r, c = shape or (rng.randint(3, 6), rng.randint(3, 6))
        rows = [[rng.choice([0, 0, 1, 2, 3]) for _ in range(c)] for _ in range(r)]
        return f"__import__('numpy').array({rows!r})"
    if kind == "array_float":
        size = shape[0] + shape[1] if shape else rng.randint(3, 10)  # one length per call
        vals = [round(rng.uniform(0, 10), 3) for _ in range(size)]
        return f"__import__('numpy').array({vals!r})"
    if kind == "text_table":
        h = hints or FileHints([], [], [], [], [], {}, 1)
        return repr(file_text(h, rng)[1])
    if kind == "str_split":
        h = hints or FileHints([], [], [], [], [], {}, 1)
        seps = h.splits or [","]
        leaf = rng.choices(["int", "word", "float", "dna"], [6, 2, 1, 1])[0]  # one per value

        def part(level: int) -> str:
            if level >= len(seps) or level > 2:
                return _cell(leaf, rng)
            return seps[level].join(part(level + 1) for _ in range(rng.randint(1, 4)))
        return repr(part(0))
    if kind.startswith("list_tuple"):
        arity = int(kind.removeprefix("list_tuple") or 2)
        cols = [rng.choice(["int", "float", "dna", "str"]) for _ in range(arity)]
        if rng.random() < 0.4:  # tuples of one kind (pairs of sequences, of numbers)
            cols = [rng.choice(["dna", "int", "float"])] * arity
        rows = [tuple(make_value(c, rng) for c in cols) for _ in range(rng.randint(2, 6))]
        if rng.random() < 0.5:  # sorted by a numeric column, as tables often are
            num = [j for j, c in enumerate(cols) if c in ("int", "float")]
            if num:
                rows.sort(key=lambda r: r[num[0]], reverse=rng.random() < 0.5)
        return repr(rows)
    if kind == "series_float":
        size = shape[0] + shape[1] if shape else rng.randint(3, 10)
        vals = [round(rng.random(), 3) for _ in range(size)]
        return f"__import__('pandas').Series({vals!r})"
    if kind == "frame":
        h = hints or FileHints([], [], [], [], [], {}, 1)
        cols = h.keys.get(param) or h.words[:4] or ["chromosome", "start", "end", "value"]
        nrow = shape[0] if shape else rng.randint(3, 6)
        data: dict[str, list[Any]] = {}
        for col in cols[:8]:
            k = rng.choices(["int", "float", "word", "chr"], [4, 3, 2, 1])[0]
            if col.lower() in ("chromosome", "chrom", "chr", "contig"):
                k = "chr"
            data[col] = [int(v) if k == "int" else float(v) if k == "float" else v
                         for v in (_cell(k, rng) for _ in range(nrow))]
        return f"__import__('pandas').DataFrame({data!r})"
    if kind == "counter":
        d = {_word(rng): rng.randint(0, 3) for _ in range(rng.randint(0, 3))}
        return f"__import__('collections').defaultdict(int, {d!r})"
    # parallel lists: most calls give every list the same length
    same = shape[0] + shape[1] if shape and rng.random() < 0.7 else None
    return repr(make_value(kind, rng, same))


def instance_expr(attrs: list[str], rng: random.Random,
                  literals: dict[str, list[Any]] | None = None, prefix: str = "") -> str:
    """A stand-in instance for a method: an object whose attributes (read by the method)
    hold values drawn from the literals they are compared with, else generated from their
    names."""
    literals = literals or {}

    def value(name: str) -> str:
        pool = literals.get(prefix + name)
        if pool and rng.random() < 0.8:
            return repr(rng.choice(pool))
        return make_expr(rng.choice(kinds_for(name)[:2]), rng)

    groups: dict[str, list[str]] = {}
    for a in attrs:
        head, _, sub = a.partition(".")
        groups.setdefault(head, [])
        if sub:
            groups[head].append(sub)
    fields = ", ".join(
        f"{h}={instance_expr(subs, rng, literals, f'{prefix}{h}.')}" if subs
        else f"{h}={value(h)}"
        for h, subs in groups.items())
    return f"__import__('types').SimpleNamespace({fields})"


def call_expr(name: str, args: list[str]) -> str:
    """The probe expression calling ``name`` on ``args`` (Python expressions)."""
    return f"{name}({', '.join(args)})"


def opaque_params(fn: Function) -> list[str]:
    params = fn.params[:fn.n_required]
    if fn.self_attrs is not None:
        params = params[1:]
    roles = param_roles(fn)
    return [p for p in params if _OPAQUE.match(p.lower()) and p not in roles]


# --------------------------------------------------------------------------- the release

#: where the published harness marks the target's place in its context
PLACEHOLDER = "<<insert solution here>>"


@dataclass
class ReleaseTask:
    """One task of the MedAgentGym BioCoder release, cleaned (or why it cannot be used)."""

    idx: str
    problem: str
    fn: Function | None
    context: str = ""
    dropped_imports: list[str] = field(default_factory=list)
    defect: str | None = None


def _top_module(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [] if node.level else [(node.module or "").split(".")[0]]
    return [a.name.split(".")[0] for a in node.names]


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def clean_release_task(record: dict[str, Any], key: str) -> ReleaseTask:
    """Read one published task (``problem``, ``solution``, ``context`` with the
    :data:`PLACEHOLDER` and a ``main()`` driver) and repair or reject it:

    * the golden (``solution``) is dedented (the release splices some methods without their
      indentation) and analysed like a corpus function (methods get a stand-in instance);
    * the context loses the placeholder, its ``main()`` driver and ``__main__`` block (the
      hidden inputs replace them), and imports of packages the sandbox lacks (``pysam``,
      ``skimage``, ...); a golden that needs one then fails to run and is excluded;
    * a context that already defines the target (the release's leaked definitions: any code
      would pass) is rejected, as is a golden or context that does not parse.
    """
    import textwrap

    idx = str(record.get("idx") or key)[:80]
    problem = str(record.get("problem") or "")[:20_000]
    solution = record.get("solution")
    context = record.get("context")
    if not isinstance(solution, str) or not isinstance(context, str):
        return ReleaseTask(idx, problem, None, defect="the record has no solution or context")
    golden = textwrap.dedent(solution.replace("\t", "    ")).strip("\n") + "\n"
    fn = analyse(key, "release", golden)
    if fn.problem:
        return ReleaseTask(idx, problem, fn, defect=fn.problem)
    if PLACEHOLDER not in context:
        return ReleaseTask(idx, problem, fn, defect="the context has no insertion point")
    try:
        mod = ast.parse(context.replace(PLACEHOLDER, ""))
    except SyntaxError as exc:
        return ReleaseTask(idx, problem, fn, defect=f"the context does not parse ({exc.msg})")
    kept: list[str] = []
    dropped: list[str] = []
    for node in mod.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == fn.name:
                return ReleaseTask(idx, problem, fn, defect=(
                    f"the context already defines `{fn.name}` (any code would pass)"))
            if node.name == "main":
                continue
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            missing = [m for m in _top_module(node) if not _importable(m)]
            if missing:
                dropped.append(ast.unparse(node))
                continue
        if any(isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == fn.name
               for n in ast.walk(node)):
            return ReleaseTask(idx, problem, fn, defect=(
                f"the context already defines `{fn.name}` (any code would pass)"))
        kept.append(ast.unparse(node))
    return ReleaseTask(idx, problem, fn, context="\n".join(kept) + ("\n" if kept else ""),
                       dropped_imports=dropped)
