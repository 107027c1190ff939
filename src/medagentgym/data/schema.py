"""Database schemas of the EHR question-answering scenarios, as plain Python data.

Contract (kept stable: the synthetic generators, the importers of real PhysioNet CSVs, the
task builders and the agent prompts all rely on it):

* ``SCHEMAS[schema][table]`` is the ordered list of ``(column, sql_type)`` pairs of a table.
  Schema names are ``"mimic_iii"`` and ``"eicu"`` (EHRSQL's preprocessed MIMIC-III / eICU
  databases, column for column, with EHRSQL's types) and ``"treqs"`` (the five-table MIMICSQL
  database of TREQS).  Table and column names are lower case; string *values* stored in the
  databases are lower case too, as in EHRSQL's preprocessing, and time stamps are text
  ``'YYYY-MM-DD HH:MM:SS'``.
* ``PRIMARY_KEYS[schema][table]`` names the primary-key column (absent: no key).
  ``create_tables`` declares an integer primary key as ``INTEGER PRIMARY KEY`` (SQLite's rowid
  alias, same INTEGER affinity as EHRSQL's ``INT``) so bulk loads stay fast.  Other
  constraints of the upstream DDL (NOT NULL, foreign keys) are documented, not enforced: real
  exports violate some of them and SQLite does not check foreign keys by default.
* ``FOREIGN_KEYS[schema]`` lists ``(table, column, ref_table, ref_column)`` relationships.
* ``TABLE_DESCRIPTIONS[schema][table]`` is one human sentence per table (used in prompts).
* ``create_tables(conn, schema)`` creates every table (``IF NOT EXISTS``);
  ``create_indexes(conn, schema)`` adds the look-up indexes that make the gold queries fast
  (call it after a bulk load); ``check_schema(conn, schema)`` lists deviations of an existing
  database; ``describe(schema)`` renders the schema as prompt text.

A database that satisfies ``check_schema(conn, schema) == []`` can back every task of that
scenario, whether it was generated (``medagentgym.data.synth``) or imported from real data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

__all__ = [
    "FOREIGN_KEYS",
    "INDEXES",
    "PRIMARY_KEYS",
    "SCHEMAS",
    "SCHEMA_NAMES",
    "TABLE_DESCRIPTIONS",
    "check_schema",
    "columns",
    "create_indexes",
    "create_tables",
    "ddl",
    "describe",
    "table_names",
]

_TS = "TIMESTAMP(0)"

SCHEMAS: dict[str, dict[str, list[tuple[str, str]]]] = {
    # EHRSQL (Lee et al., NeurIPS 2022 datasets track) preprocessed MIMIC-III: 17 tables.
    "mimic_iii": {
        "patients": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("gender", "VARCHAR(5)"),
            ("dob", _TS),
            ("dod", _TS),
        ],
        "admissions": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("admittime", _TS),
            ("dischtime", _TS),
            ("admission_type", "VARCHAR(50)"),
            ("admission_location", "VARCHAR(50)"),
            ("discharge_location", "VARCHAR(50)"),
            ("insurance", "VARCHAR(255)"),
            ("language", "VARCHAR(10)"),
            ("marital_status", "VARCHAR(50)"),
            ("ethnicity", "VARCHAR(200)"),
            ("age", "INT"),
        ],
        "d_icd_diagnoses": [
            ("row_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("short_title", "VARCHAR(50)"),
            ("long_title", "VARCHAR(255)"),
        ],
        "d_icd_procedures": [
            ("row_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("short_title", "VARCHAR(50)"),
            ("long_title", "VARCHAR(255)"),
        ],
        "d_labitems": [
            ("row_id", "INT"),
            ("itemid", "INT"),
            ("label", "VARCHAR(200)"),
        ],
        "d_items": [
            ("row_id", "INT"),
            ("itemid", "INT"),
            ("label", "VARCHAR(200)"),
            ("linksto", "VARCHAR(50)"),
        ],
        "diagnoses_icd": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("charttime", _TS),
        ],
        "procedures_icd": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("charttime", _TS),
        ],
        "labevents": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("itemid", "INT"),
            ("charttime", _TS),
            ("valuenum", "DOUBLE PRECISION"),
            ("valueuom", "VARCHAR(20)"),
        ],
        "prescriptions": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("startdate", _TS),
            ("enddate", _TS),
            ("drug", "VARCHAR(100)"),
            ("dose_val_rx", "VARCHAR(120)"),
            ("dose_unit_rx", "VARCHAR(120)"),
            ("route", "VARCHAR(120)"),
        ],
        "cost": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("event_type", "VARCHAR(20)"),
            ("event_id", "INT"),
            ("chargetime", _TS),
            ("cost", "DOUBLE PRECISION"),
        ],
        "chartevents": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("itemid", "INT"),
            ("charttime", _TS),
            ("valuenum", "DOUBLE PRECISION"),
            ("valueuom", "VARCHAR(50)"),
        ],
        "inputevents_cv": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("charttime", _TS),
            ("itemid", "INT"),
            ("amount", "DOUBLE PRECISION"),
        ],
        "outputevents": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("charttime", _TS),
            ("itemid", "INT"),
            ("value", "DOUBLE PRECISION"),
        ],
        "microbiologyevents": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("charttime", _TS),
            ("spec_type_desc", "VARCHAR(100)"),
            ("org_name", "VARCHAR(100)"),
        ],
        "icustays": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("first_careunit", "VARCHAR(20)"),
            ("last_careunit", "VARCHAR(20)"),
            ("first_wardid", "SMALLINT"),
            ("last_wardid", "SMALLINT"),
            ("intime", _TS),
            ("outtime", _TS),
        ],
        "transfers": [
            ("row_id", "INT"),
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("eventtype", "VARCHAR(20)"),
            ("careunit", "VARCHAR(20)"),
            ("wardid", "SMALLINT"),
            ("intime", _TS),
            ("outtime", _TS),
        ],
    },
    # EHRSQL preprocessed eICU: 10 tables.
    "eicu": {
        "patient": [
            ("uniquepid", "VARCHAR(10)"),
            ("patienthealthsystemstayid", "INT"),
            ("patientunitstayid", "INT"),
            ("gender", "VARCHAR(25)"),
            ("age", "VARCHAR(10)"),
            ("ethnicity", "VARCHAR(50)"),
            ("hospitalid", "INT"),
            ("wardid", "INT"),
            ("admissionheight", "NUMERIC(10,2)"),
            ("admissionweight", "NUMERIC(10,2)"),
            ("dischargeweight", "NUMERIC(10,2)"),
            ("hospitaladmittime", _TS),
            ("hospitaladmitsource", "VARCHAR(30)"),
            ("unitadmittime", _TS),
            ("unitdischargetime", _TS),
            ("hospitaldischargetime", _TS),
            ("hospitaldischargestatus", "VARCHAR(10)"),
        ],
        "diagnosis": [
            ("diagnosisid", "INT"),
            ("patientunitstayid", "INT"),
            ("diagnosisname", "VARCHAR(200)"),
            ("diagnosistime", _TS),
            ("icd9code", "VARCHAR(100)"),
        ],
        "treatment": [
            ("treatmentid", "INT"),
            ("patientunitstayid", "INT"),
            ("treatmentname", "VARCHAR(200)"),
            ("treatmenttime", _TS),
        ],
        "lab": [
            ("labid", "INT"),
            ("patientunitstayid", "INT"),
            ("labname", "VARCHAR(256)"),
            ("labresult", "NUMERIC(11,4)"),
            ("labresulttime", _TS),
        ],
        "medication": [
            ("medicationid", "INT"),
            ("patientunitstayid", "INT"),
            ("drugname", "VARCHAR(220)"),
            ("dosage", "VARCHAR(60)"),
            ("routeadmin", "VARCHAR(120)"),
            ("drugstarttime", _TS),
            ("drugstoptime", _TS),
        ],
        "cost": [
            ("costid", "INT"),
            ("uniquepid", "VARCHAR(10)"),
            ("patienthealthsystemstayid", "INT"),
            ("eventtype", "VARCHAR(20)"),
            ("eventid", "INT"),
            ("chargetime", _TS),
            ("cost", "DOUBLE PRECISION"),
        ],
        "allergy": [
            ("allergyid", "INT"),
            ("patientunitstayid", "INT"),
            ("drugname", "VARCHAR(255)"),
            ("allergyname", "VARCHAR(255)"),
            ("allergytime", _TS),
        ],
        "intakeoutput": [
            ("intakeoutputid", "INT"),
            ("patientunitstayid", "INT"),
            ("cellpath", "VARCHAR(500)"),
            ("celllabel", "VARCHAR(255)"),
            ("cellvaluenumeric", "NUMERIC(12,4)"),
            ("intakeoutputtime", _TS),
        ],
        "microlab": [
            ("microlabid", "INT"),
            ("patientunitstayid", "INT"),
            ("culturesite", "VARCHAR(255)"),
            ("organism", "VARCHAR(255)"),
            ("culturetakentime", _TS),
        ],
        "vitalperiodic": [
            ("vitalperiodicid", "BIGINT"),
            ("patientunitstayid", "INT"),
            ("temperature", "NUMERIC(11,4)"),
            ("sao2", "INT"),
            ("heartrate", "INT"),
            ("respiration", "INT"),
            ("systemicsystolic", "INT"),
            ("systemicdiastolic", "INT"),
            ("systemicmean", "INT"),
            ("observationtime", _TS),
        ],
    },
    # TREQS / MIMICSQL (Wang et al., WWW 2020): five de-normalised tables built from MIMIC-III.
    "treqs": {
        "demographic": [
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("name", "VARCHAR(100)"),
            ("marital_status", "VARCHAR(50)"),
            ("age", "INT"),
            ("dob", _TS),
            ("gender", "VARCHAR(5)"),
            ("language", "VARCHAR(10)"),
            ("religion", "VARCHAR(50)"),
            ("admission_type", "VARCHAR(50)"),
            ("days_stay", "INT"),
            ("insurance", "VARCHAR(255)"),
            ("ethnicity", "VARCHAR(200)"),
            ("expire_flag", "INT"),
            ("admission_location", "VARCHAR(50)"),
            ("discharge_location", "VARCHAR(50)"),
            ("diagnosis", "VARCHAR(255)"),
            ("dod", _TS),
            ("dob_year", "INT"),
            ("dod_year", "DOUBLE PRECISION"),
            ("admittime", _TS),
            ("dischtime", _TS),
            ("admityear", "INT"),
        ],
        "diagnoses": [
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("short_title", "VARCHAR(50)"),
            ("long_title", "VARCHAR(255)"),
        ],
        "procedures": [
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icd9_code", "VARCHAR(10)"),
            ("short_title", "VARCHAR(50)"),
            ("long_title", "VARCHAR(255)"),
        ],
        "prescriptions": [
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("icustay_id", "INT"),
            ("drug_type", "VARCHAR(100)"),
            ("drug", "VARCHAR(100)"),
            ("formulary_drug_cd", "VARCHAR(120)"),
            ("route", "VARCHAR(120)"),
            ("drug_dose", "VARCHAR(120)"),
        ],
        "lab": [
            ("subject_id", "INT"),
            ("hadm_id", "INT"),
            ("itemid", "INT"),
            ("charttime", _TS),
            ("flag", "VARCHAR(20)"),
            ("value_unit", "VARCHAR(50)"),
            ("label", "VARCHAR(200)"),
            ("fluid", "VARCHAR(100)"),
            ("category", "VARCHAR(100)"),
        ],
    },
}

SCHEMA_NAMES: tuple[str, ...] = tuple(SCHEMAS)


def _pk(schema: str) -> dict[str, str]:
    tables = SCHEMAS[schema]
    if schema == "mimic_iii":
        return {t: "row_id" for t in tables}
    if schema == "eicu":
        return {t: cols[0][0] for t, cols in tables.items() if t != "patient"} | {
            "patient": "patientunitstayid"
        }
    return {}


PRIMARY_KEYS: dict[str, dict[str, str]] = {s: _pk(s) for s in SCHEMAS}

FOREIGN_KEYS: dict[str, list[tuple[str, str, str, str]]] = {
    "mimic_iii": [
        ("admissions", "subject_id", "patients", "subject_id"),
        ("diagnoses_icd", "hadm_id", "admissions", "hadm_id"),
        ("diagnoses_icd", "icd9_code", "d_icd_diagnoses", "icd9_code"),
        ("procedures_icd", "hadm_id", "admissions", "hadm_id"),
        ("procedures_icd", "icd9_code", "d_icd_procedures", "icd9_code"),
        ("labevents", "hadm_id", "admissions", "hadm_id"),
        ("labevents", "itemid", "d_labitems", "itemid"),
        ("prescriptions", "hadm_id", "admissions", "hadm_id"),
        ("cost", "hadm_id", "admissions", "hadm_id"),
        # cost.event_id points at <event_type>.row_id, event_type in
        # {'diagnoses_icd', 'procedures_icd', 'labevents', 'prescriptions'}
        ("cost", "event_id", "diagnoses_icd|procedures_icd|labevents|prescriptions", "row_id"),
        ("chartevents", "icustay_id", "icustays", "icustay_id"),
        ("chartevents", "itemid", "d_items", "itemid"),
        ("inputevents_cv", "icustay_id", "icustays", "icustay_id"),
        ("inputevents_cv", "itemid", "d_items", "itemid"),
        ("outputevents", "icustay_id", "icustays", "icustay_id"),
        ("outputevents", "itemid", "d_items", "itemid"),
        ("microbiologyevents", "hadm_id", "admissions", "hadm_id"),
        ("icustays", "hadm_id", "admissions", "hadm_id"),
        ("transfers", "hadm_id", "admissions", "hadm_id"),
        ("transfers", "icustay_id", "icustays", "icustay_id"),
    ],
    "eicu": [
        (t, "patientunitstayid", "patient", "patientunitstayid")
        for t in (
            "diagnosis",
            "treatment",
            "lab",
            "medication",
            "allergy",
            "intakeoutput",
            "microlab",
            "vitalperiodic",
        )
    ]
    + [
        ("cost", "patienthealthsystemstayid", "patient", "patienthealthsystemstayid"),
        # cost.eventid points at <eventtype>.<eventtype>id, eventtype in
        # {'diagnosis', 'treatment', 'lab', 'medication'}
        ("cost", "eventid", "diagnosis|treatment|lab|medication", "<eventtype>id"),
    ],
    "treqs": [
        (t, "hadm_id", "demographic", "hadm_id")
        for t in ("diagnoses", "procedures", "prescriptions", "lab")
    ],
}

TABLE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "mimic_iii": {
        "patients": "One row per patient: gender ('m'/'f'), date of birth and date of death "
        "(null if alive).",
        "admissions": "One row per hospital admission: admit/discharge times (dischtime is "
        "null while the patient is still in hospital), type, locations, insurance, language, "
        "marital status, ethnicity and age in years at admission.",
        "d_icd_diagnoses": "Dictionary of ICD-9 diagnosis codes with short and long titles.",
        "d_icd_procedures": "Dictionary of ICD-9 procedure codes with short and long titles.",
        "d_labitems": "Dictionary of laboratory tests (itemid -> label).",
        "d_items": "Dictionary of ICU charting items (itemid -> label); linksto names the event "
        "table that uses the item (chartevents, inputevents_cv or outputevents).",
        "diagnoses_icd": "ICD-9 diagnoses recorded for each admission, with a chart time.",
        "procedures_icd": "ICD-9 procedures performed during each admission, with a chart time.",
        "labevents": "Laboratory results: lab item, time, numeric value and unit.",
        "prescriptions": "Medication orders: drug, start/end dates, dose value, dose unit and "
        "route.",
        "cost": "Charges: one row per billed event; event_type names the event table "
        "(diagnoses_icd, procedures_icd, labevents, prescriptions) and event_id its row_id.",
        "chartevents": "ICU charted observations (vital signs, weights, heights): item, time, "
        "numeric value and unit.",
        "inputevents_cv": "ICU fluid/drug inputs: item and amount (ml unless stated).",
        "outputevents": "ICU outputs (urine, drains...): item and volume (ml).",
        "microbiologyevents": "Microbiology cultures: specimen type and the organism grown "
        "(null when nothing grew).",
        "icustays": "ICU stays within admissions: first/last care unit and ward, in/out times "
        "(outtime null while the patient is still in the ICU).",
        "transfers": "Patient movements between wards and care units during an admission "
        "(eventtype admit/transfer/discharge).",
    },
    "eicu": {
        "patient": "One row per ICU unit stay: patient id (uniquepid), hospital stay id, unit "
        "stay id, gender, age, ethnicity, hospital/ward, height, weights, admit/discharge "
        "times (null while still admitted) and discharge status ('alive'/'expired').",
        "diagnosis": "Diagnoses recorded during a unit stay, with time and ICD-9 code(s).",
        "treatment": "Treatments given during a unit stay, with time.",
        "lab": "Laboratory results during a unit stay: lab name, numeric result and time.",
        "medication": "Medication orders: drug name, dosage, route, start and stop times.",
        "cost": "Charges per hospital stay: eventtype names the event table (diagnosis, "
        "treatment, lab, medication) and eventid its id.",
        "allergy": "Allergies recorded during a unit stay (drug name and allergy name).",
        "intakeoutput": "Intake/output charting: cell path (contains 'intake' or 'output'), "
        "cell label, numeric value (ml) and time.",
        "microlab": "Microbiology cultures: culture site, organism and time taken.",
        "vitalperiodic": "Periodic vital signs (every 5 minutes): temperature, sao2, heart "
        "rate, respiration and systemic blood pressures.",
    },
    "treqs": {
        "demographic": "One row per admission with patient demographics: name, age, gender, "
        "dates of birth/death, admission type/location/times, length of stay (days_stay), "
        "insurance, religion, language, ethnicity, expire_flag and admission diagnosis.",
        "diagnoses": "ICD-9 diagnoses per admission with short and long titles.",
        "procedures": "ICD-9 procedures per admission with short and long titles.",
        "prescriptions": "Prescriptions per admission: drug, drug type, formulary code, route "
        "and dose.",
        "lab": "Lab tests per admission: itemid, time, abnormal flag, value unit, label, "
        "fluid and category.",
    },
}

# Look-up indexes created after a bulk load (not part of the logical schema).
INDEXES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "mimic_iii": [
        ("admissions", ("subject_id",)),
        ("diagnoses_icd", ("hadm_id",)),
        ("diagnoses_icd", ("icd9_code",)),
        ("procedures_icd", ("hadm_id",)),
        ("procedures_icd", ("icd9_code",)),
        ("labevents", ("hadm_id", "itemid")),
        ("labevents", ("itemid",)),
        ("prescriptions", ("hadm_id",)),
        ("prescriptions", ("drug",)),
        ("cost", ("hadm_id",)),
        ("cost", ("event_type", "event_id")),
        ("chartevents", ("icustay_id", "itemid")),
        ("chartevents", ("itemid",)),
        ("inputevents_cv", ("icustay_id",)),
        ("inputevents_cv", ("itemid",)),
        ("outputevents", ("icustay_id",)),
        ("outputevents", ("itemid",)),
        ("microbiologyevents", ("hadm_id",)),
        ("icustays", ("hadm_id",)),
        ("icustays", ("icustay_id",)),
        ("transfers", ("hadm_id",)),
        ("transfers", ("icustay_id",)),
    ],
    "eicu": [
        ("patient", ("uniquepid",)),
        ("patient", ("patienthealthsystemstayid",)),
        ("diagnosis", ("patientunitstayid",)),
        ("diagnosis", ("diagnosisname",)),
        ("treatment", ("patientunitstayid",)),
        ("treatment", ("treatmentname",)),
        ("lab", ("patientunitstayid", "labname")),
        ("lab", ("labname",)),
        ("medication", ("patientunitstayid",)),
        ("medication", ("drugname",)),
        ("cost", ("patienthealthsystemstayid",)),
        ("cost", ("eventtype", "eventid")),
        ("allergy", ("patientunitstayid",)),
        ("intakeoutput", ("patientunitstayid",)),
        ("microlab", ("patientunitstayid",)),
        ("vitalperiodic", ("patientunitstayid",)),
    ],
    "treqs": [
        ("demographic", ("hadm_id",)),
        ("demographic", ("subject_id",)),
        ("diagnoses", ("hadm_id",)),
        ("procedures", ("hadm_id",)),
        ("prescriptions", ("hadm_id",)),
        ("lab", ("hadm_id",)),
    ],
}


def _check_name(schema: str) -> dict[str, list[tuple[str, str]]]:
    try:
        return SCHEMAS[schema]
    except KeyError:
        raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMA_NAMES}") from None


def table_names(schema: str) -> list[str]:
    """Table names of ``schema`` in declaration order."""
    return list(_check_name(schema))


def columns(schema: str, table: str) -> list[str]:
    """Column names of ``schema.table`` in declaration order."""
    return [c for c, _ in _check_name(schema)[table]]


def ddl(schema: str, table: str | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement(s) for one table or the whole schema."""
    tables = _check_name(schema)
    names = [table] if table is not None else list(tables)
    out = []
    for t in names:
        pk = PRIMARY_KEYS[schema].get(t)
        cols = []
        for c, typ in tables[t]:
            if c == pk and typ in ("INT", "BIGINT"):
                cols.append(f"    {c} INTEGER PRIMARY KEY")
            elif c == pk:
                cols.append(f"    {c} {typ} PRIMARY KEY")
            else:
                cols.append(f"    {c} {typ}")
        out.append(f"CREATE TABLE IF NOT EXISTS {t} (\n" + ",\n".join(cols) + "\n);")
    return "\n\n".join(out)


def create_tables(conn: sqlite3.Connection, schema: str) -> None:
    """Create every table of ``schema`` in ``conn`` (existing tables are left alone)."""
    conn.executescript(ddl(schema))


def create_indexes(conn: sqlite3.Connection, schema: str) -> None:
    """Create the look-up indexes of ``schema`` (idempotent; run after bulk inserts)."""
    _check_name(schema)
    for table, cols in INDEXES[schema]:
        name = f"ix_{table}_{'_'.join(cols)}"
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(cols)})")


def check_schema(conn: sqlite3.Connection, schema: str, *, strict: bool = True) -> list[str]:
    """Deviations of the database behind ``conn`` from ``schema`` (empty list: conforms).

    Checks that every table exists with exactly the declared columns in order; with
    ``strict`` also that there are no extra tables (indexes and ``sqlite_*`` are ignored).
    """
    tables = _check_name(schema)
    problems: list[str] = []
    have = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    for t, cols in tables.items():
        if t not in have:
            problems.append(f"missing table {t}")
            continue
        got = [r[1].lower() for r in conn.execute(f"PRAGMA table_info({t})")]
        want = [c for c, _ in cols]
        if got != want:
            problems.append(f"table {t}: columns {got} != {want}")
    if strict:
        problems += [f"unexpected table {t}" for t in sorted(have - set(tables))]
    return problems


def describe(schema: str, tables: Iterable[str] | None = None) -> str:
    """Prompt-ready text: one block per table with its description and typed columns."""
    all_tables = _check_name(schema)
    lines = []
    for t in tables if tables is not None else all_tables:
        cols = ", ".join(f"{c} {typ}" for c, typ in all_tables[t])
        lines.append(f"{t}: {TABLE_DESCRIPTIONS[schema][t]}\n  columns: {cols}")
    return "\n".join(lines)


# --- MIMIC-IV (EHRSQL-2024), kept in its own module (issue 12) -----------------------------
def _add_mimic_iv() -> None:
    from medagentgym.data import schema_mimic_iv as m

    global SCHEMA_NAMES
    SCHEMAS["mimic_iv"] = m.TABLES
    PRIMARY_KEYS["mimic_iv"] = m.PRIMARY_KEYS
    FOREIGN_KEYS["mimic_iv"] = m.FOREIGN_KEYS
    TABLE_DESCRIPTIONS["mimic_iv"] = m.TABLE_DESCRIPTIONS
    INDEXES["mimic_iv"] = m.INDEXES
    SCHEMA_NAMES = tuple(SCHEMAS)


_add_mimic_iv()
