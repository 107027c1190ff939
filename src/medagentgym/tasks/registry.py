"""The dataset registry: names -> task families, never an if/elif on names.

A dataset is a :class:`~medagentgym.tasks.family.DatasetSpec`: a family (``"module:Class"``,
imported lazily) plus the options that fix its identity, the databases it runs on and the
sources its tasks come from. Adding a dataset to an existing family is one ``register`` call.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from typing import TYPE_CHECKING, Any

from medagentgym.errors import ConfigurationError
from medagentgym.tasks.family import DatasetSpec

if TYPE_CHECKING:
    from medagentgym.tasks.family import FamilyOptions, TaskFamily
    from medagentgym.types import Task

__all__ = ["DatasetSpec", "clear_cache", "datasets_using", "family_class", "get_family",
           "get_spec", "list_datasets", "load_tasks", "options_model", "register"]

_REGISTRY: dict[str, DatasetSpec] = {}
_FAMILIES: dict[tuple[str, str], TaskFamily] = {}
_lock = threading.Lock()


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ConfigurationError(f"dataset {spec.name!r} is already registered differently")
    if spec.databases:
        from medagentgym.data.databases import get_database

        for db_id in spec.databases:
            get_database(db_id)  # a one-line error for an unregistered database
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Names of the registered datasets, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(_REGISTRY)}")


def datasets_using(db_id: str) -> list[str]:
    """The registered datasets that run on database ``db_id``."""
    return [name for name, spec in _REGISTRY.items() if db_id in spec.databases]


def family_class(name: str) -> type[TaskFamily]:
    """The family class of a dataset (its module imported on first use)."""
    spec = get_spec(name)
    module, _, cls = spec.family.partition(":")
    return getattr(importlib.import_module(module), cls)


def options_model(name: str) -> type[FamilyOptions]:
    """The typed options of a dataset's family."""
    return family_class(name).Options


def get_family(name: str, **options: Any) -> TaskFamily:
    """The (cached) family instance for a dataset, configured by its spec and ``options``.

    ``options`` are validated against the family's options model (a one-line
    ConfigurationError listing the valid ones); the spec's own options and options of
    ``identity`` scope are the dataset's and cannot be given."""
    spec = get_spec(name)
    key = (spec.name, repr(sorted(options.items())))
    with _lock:
        fam = _FAMILIES.get(key)
        if fam is None:
            family_cls = family_class(spec.name)
            fixed = sorted(k for k in options
                           if k in spec.options or (k in family_cls.Options.model_fields
                                                    and family_cls.Options.scope(k) == "identity"))
            if fixed:
                raise ConfigurationError(
                    f"{spec.name}: {', '.join(fixed)} is fixed by the dataset and cannot be "
                    "given as an option (register another dataset for another value)")
            fam = family_cls(spec, **{**spec.options, **options})
            _FAMILIES[key] = fam
        return fam


def load_tasks(name: str, split: str = "test", **options: Any) -> list[Task]:
    """The tasks of a dataset split (with ground truth attached, host-side)."""
    spec = get_spec(name)
    if split not in spec.splits:
        raise ConfigurationError(
            f"dataset {spec.name!r} has no split {split!r}; splits: {', '.join(spec.splits)}")
    return get_family(spec.name, **options).load_tasks(split)


def clear_cache() -> None:
    with _lock:
        _FAMILIES.clear()


# --------------------------------------------------------------------------- built-ins

_EHR = "medagentgym.tasks.ehr_sql:EhrSqlFamily"
_EHR_SPLITS = ("train", "valid", "test")  # valid: carved from train (docs/datasets.md)

for _spec in (
    DatasetSpec("mimic_iii", _EHR, "EHRSQL questions answered with code over MIMIC-III",
                "EHR database QA", licence="CC BY 4.0 (questions)", sources=("ehrsql",),
                databases=("mimic_iii",), splits=_EHR_SPLITS),
    DatasetSpec("eicu", _EHR, "EHRSQL questions answered with code over eICU",
                "EHR database QA", licence="CC BY 4.0 (questions)", sources=("ehrsql",),
                databases=("eicu",), splits=_EHR_SPLITS),
    DatasetSpec("treqs", _EHR, "MIMICSQL (TREQS) questions over the 5-table MIMIC schema",
                "EHR database QA", licence="MIT (questions)", sources=("treqs",),
                databases=("treqs",), splits=_EHR_SPLITS),
    DatasetSpec("ehr_seqsql", _EHR, "Chains of related EHRSQL questions about one patient",
                "EHR database QA (sequential)", options={"mode": "sequence"},
                in_distribution=False, licence="CC BY 4.0 (questions)", sources=("ehrsql",),
                databases=("mimic_iii",), splits=_EHR_SPLITS),
):
    register(_spec)

register(DatasetSpec(
    "medcalcbench", "medagentgym.tasks.medcalc:MedCalcFamily",
    "Medical calculator values (55 calculators) computed from a patient note",
    "Clinical calculation", licence="CC BY-SA 4.0 (notes and labels)",
    sources=("medcalcbench",)))
register(DatasetSpec(
    "npowerai", "medagentgym.tasks.npower:NPowerFamily",
    "Sample size and power for six families of statistical tests",
    "Statistical study design", in_distribution=False,
    licence="Apache-2.0 (generated); official release: unspecified"))

# --- MedAgentBench on the embedded FHIR server (issue 13) --------------------------------
register(DatasetSpec(
    "medagentbench", "medagentgym.tasks.medagentbench:MedAgentBenchFamily",
    "MedAgentBench: read and write a FHIR R4 EHR (embedded server, reset per episode)",
    "EHR agent (FHIR)", licence="MIT (tasks)", sources=("medagentbench",),
    splits=("train", "test", "generated")))

# --- BioCoder: bioinformatics functions graded on hidden inputs (issue 14) ----------------
register(DatasetSpec(
    "biocoder", "medagentgym.tasks.biocoder:BioCoderFamily",
    "BioCoder: write a bioinformatics function; graded on hidden inputs (differential testing)",
    "Bioinformatics coding", in_distribution=False,
    licence="CC BY 4.0 (BioCoder; snippets under their projects' licences)",
    sources=("biocoder",)))

# --- EHRSHOT and MIMIC-Extract: ML on EHR features, hidden test labels (issue 15) --------
# splits: the paper's train/test (15 and 6 synthetic problems each); ehrshot's `open` split:
# real open data (lifelines GBSG2 / kidney transplant)
_ML = "medagentgym.tasks.mlehr:MlEhrFamily"
register(DatasetSpec(
    "ehrshot", _ML,
    "EHRSHOT: train a model on patient embeddings (15 tasks); graded by test AUROC vs a "
    "reference model", "ML on EHR features", options={"suite": "ehrshot"},
    licence="Apache-2.0 (synthetic); open split: lifelines datasets",
    splits=("train", "test", "open")))
register(DatasetSpec(
    "mimic_extract", _ML,
    "MIMIC-Extract: mortality, length of stay and interventions from 24 h of hourly ICU data; "
    "graded by test AUROC vs a reference model", "ML on EHR features",
    options={"suite": "mimic_extract"}, in_distribution=False,
    licence="Apache-2.0 (synthetic)"))

# --- EHRSQL-2024 on MIMIC-IV: the authors' answers on the open demo (issue 12) -------------
register(DatasetSpec(
    "mimic_iv", "medagentgym.tasks.ehrsql2024:MimicIvFamily",
    "EHRSQL-2024 questions over MIMIC-IV, graded against the authors' answers on the demo",
    "EHR database QA", in_distribution=False,
    licence="CC BY 4.0 (questions and answers); ODbL (MIMIC-IV demo)",
    sources=("ehrsql2024",), databases=("mimic_iv",), splits=("train", "valid", "test")))

# --- EHRCon: note-table consistency on MIMIC-III (issue 15) --------------------------------
register(DatasetSpec(
    "ehrcon", "medagentgym.tasks.ehrcon:EhrConFamily",
    "EHRCon: is a note's mention of an entity inconsistent with the patient's tables?",
    "Note-table consistency", in_distribution=False,
    licence="Apache-2.0 (generated notes); credentialed release: PhysioNet licence",
    databases=("mimic_iii",)))

# --- BioDSBench: cBioPortal analyses graded by probes of the published asserts (issue 14) ---
register(DatasetSpec(
    "biodsbench", "medagentgym.tasks.biodsbench:BioDSBenchFamily",
    "BioDSBench: analyse cBioPortal study tables; the published asserts become probes "
    "(synthetic tables per episode, or your real studies)",
    "Biomedical data analysis", licence="MIT (tasks); studies: cBioPortal (ODbL)",
    sources=("biodsbench",)))
