"""The EHRSQL-2024 MIMIC-IV schema (17 tables), as plain data merged into
:mod:`medagentgym.data.schema` under the name ``"mimic_iv"``.

Column for column the DDL published with EHRSQL-2024 (``data/mimic_iv/mimic_iv.sql`` of
glee4810/ehrsql-2024): MIMIC-III's EHRSQL layout adapted to MIMIC-IV — ``icd_code`` (values
``icd9|<code>`` / ``icd10|<code>``) instead of ``icd9_code``, ``stay_id`` instead of
``icustay_id``, ``inputevents`` (``totalamount``) instead of ``inputevents_cv``, no short
titles, no ``ethnicity``. Every table has ``row_id`` as its primary key.
"""

from __future__ import annotations

_TS = "TIMESTAMP(0)"

TABLES: dict[str, list[tuple[str, str]]] = {
    "patients": [("row_id", "INT"), ("subject_id", "INT"), ("gender", "VARCHAR(5)"),
                 ("dob", _TS), ("dod", _TS)],
    "admissions": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                   ("admittime", _TS), ("dischtime", _TS), ("admission_type", "VARCHAR(50)"),
                   ("admission_location", "VARCHAR(50)"), ("discharge_location", "VARCHAR(50)"),
                   ("insurance", "VARCHAR(255)"), ("language", "VARCHAR(10)"),
                   ("marital_status", "VARCHAR(50)"), ("age", "INT")],
    "d_icd_diagnoses": [("row_id", "INT"), ("icd_code", "VARCHAR(10)"),
                        ("long_title", "VARCHAR(255)")],
    "d_icd_procedures": [("row_id", "INT"), ("icd_code", "VARCHAR(10)"),
                         ("long_title", "VARCHAR(255)")],
    "d_labitems": [("row_id", "INT"), ("itemid", "INT"), ("label", "VARCHAR(200)")],
    "d_items": [("row_id", "INT"), ("itemid", "INT"), ("label", "VARCHAR(200)"),
                ("abbreviation", "VARCHAR(200)"), ("linksto", "VARCHAR(50)")],
    "diagnoses_icd": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                      ("icd_code", "VARCHAR(10)"), ("charttime", _TS)],
    "procedures_icd": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                       ("icd_code", "VARCHAR(10)"), ("charttime", _TS)],
    "labevents": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                  ("itemid", "INT"), ("charttime", _TS), ("valuenum", "DOUBLE PRECISION"),
                  ("valueuom", "VARCHAR(20)")],
    "prescriptions": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                      ("starttime", _TS), ("stoptime", _TS), ("drug", "VARCHAR(255)"),
                      ("dose_val_rx", "VARCHAR(100)"), ("dose_unit_rx", "VARCHAR(50)"),
                      ("route", "VARCHAR(50)")],
    "cost": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
             ("event_type", "VARCHAR(20)"), ("event_id", "INT"), ("chargetime", _TS),
             ("cost", "DOUBLE PRECISION")],
    "chartevents": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                    ("stay_id", "INT"), ("itemid", "INT"), ("charttime", _TS),
                    ("valuenum", "DOUBLE PRECISION"), ("valueuom", "VARCHAR(50)")],
    "inputevents": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                    ("stay_id", "INT"), ("starttime", _TS), ("itemid", "INT"),
                    ("totalamount", "DOUBLE PRECISION"), ("totalamountuom", "VARCHAR(50)")],
    "outputevents": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                     ("stay_id", "INT"), ("charttime", _TS), ("itemid", "INT"),
                     ("value", "DOUBLE PRECISION"), ("valueuom", "VARCHAR(50)")],
    "microbiologyevents": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                           ("charttime", _TS), ("spec_type_desc", "VARCHAR(100)"),
                           ("test_name", "VARCHAR(100)"), ("org_name", "VARCHAR(100)")],
    "icustays": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                 ("stay_id", "INT"), ("first_careunit", "VARCHAR(20)"),
                 ("last_careunit", "VARCHAR(20)"), ("intime", _TS), ("outtime", _TS)],
    "transfers": [("row_id", "INT"), ("subject_id", "INT"), ("hadm_id", "INT"),
                  ("transfer_id", "INT"), ("eventtype", "VARCHAR(20)"),
                  ("careunit", "VARCHAR(20)"), ("intime", _TS), ("outtime", _TS)],
}

PRIMARY_KEYS: dict[str, str] = {t: "row_id" for t in TABLES}

FOREIGN_KEYS: list[tuple[str, str, str, str]] = [
    ("admissions", "subject_id", "patients", "subject_id"),
    ("diagnoses_icd", "hadm_id", "admissions", "hadm_id"),
    ("diagnoses_icd", "icd_code", "d_icd_diagnoses", "icd_code"),
    ("procedures_icd", "hadm_id", "admissions", "hadm_id"),
    ("procedures_icd", "icd_code", "d_icd_procedures", "icd_code"),
    ("labevents", "hadm_id", "admissions", "hadm_id"),
    ("labevents", "itemid", "d_labitems", "itemid"),
    ("prescriptions", "hadm_id", "admissions", "hadm_id"),
    ("cost", "hadm_id", "admissions", "hadm_id"),
    ("cost", "event_id", "diagnoses_icd|procedures_icd|labevents|prescriptions", "row_id"),
    ("chartevents", "stay_id", "icustays", "stay_id"),
    ("chartevents", "itemid", "d_items", "itemid"),
    ("inputevents", "stay_id", "icustays", "stay_id"),
    ("inputevents", "itemid", "d_items", "itemid"),
    ("outputevents", "stay_id", "icustays", "stay_id"),
    ("outputevents", "itemid", "d_items", "itemid"),
    ("microbiologyevents", "hadm_id", "admissions", "hadm_id"),
    ("icustays", "hadm_id", "admissions", "hadm_id"),
    ("transfers", "hadm_id", "admissions", "hadm_id"),
]

TABLE_DESCRIPTIONS: dict[str, str] = {
    "patients": "One row per patient: gender ('m'/'f'), date of birth and date of death "
    "(null if alive or after the current time).",
    "admissions": "One row per hospital admission: admit/discharge times (dischtime is null "
    "while the patient is still in hospital), type, locations, insurance, language, marital "
    "status and age in years at admission.",
    "d_icd_diagnoses": "Dictionary of ICD-9 and ICD-10 diagnosis codes (icd_code is "
    "'icd9|<code>' or 'icd10|<code>') with long titles.",
    "d_icd_procedures": "Dictionary of ICD-9 and ICD-10 procedure codes (icd_code is "
    "'icd9|<code>' or 'icd10|<code>') with long titles.",
    "d_labitems": "Dictionary of laboratory tests (itemid -> label).",
    "d_items": "Dictionary of ICU charting items (itemid -> label, abbreviation); linksto "
    "names the event table that uses the item (chartevents, inputevents or outputevents).",
    "diagnoses_icd": "Diagnoses recorded for each admission (charted at the admission time).",
    "procedures_icd": "Procedures performed during each admission, with a chart time.",
    "labevents": "Laboratory results: lab item, time, numeric value and unit.",
    "prescriptions": "Medication orders: drug, start/stop times, dose value, dose unit and "
    "route.",
    "cost": "Charges: one row per billed event; event_type names the event table "
    "(diagnoses_icd, procedures_icd, labevents, prescriptions) and event_id its row_id.",
    "chartevents": "ICU charted vital signs, weight and height: item, time, numeric value "
    "and unit.",
    "inputevents": "ICU inputs (fluids, drugs): item, start time and total amount (ml).",
    "outputevents": "ICU outputs (urine, drains...): item, time and volume (ml).",
    "microbiologyevents": "Microbiology tests: specimen type, test name and the organism "
    "grown (null when nothing grew).",
    "icustays": "ICU stays within admissions: first/last care unit, in/out times (outtime "
    "null while the patient is still in the ICU).",
    "transfers": "Patient movements between care units during an admission (eventtype "
    "admit/transfer/discharge/ed).",
}

INDEXES: list[tuple[str, tuple[str, ...]]] = [
    ("admissions", ("subject_id",)),
    ("admissions", ("hadm_id",)),
    ("d_icd_diagnoses", ("long_title",)),
    ("d_icd_diagnoses", ("icd_code",)),
    ("d_icd_procedures", ("long_title",)),
    ("d_icd_procedures", ("icd_code",)),
    ("d_labitems", ("label",)),
    ("d_items", ("label",)),
    ("diagnoses_icd", ("hadm_id",)),
    ("diagnoses_icd", ("icd_code",)),
    ("procedures_icd", ("hadm_id",)),
    ("procedures_icd", ("icd_code",)),
    ("labevents", ("hadm_id", "itemid")),
    ("labevents", ("itemid",)),
    ("prescriptions", ("hadm_id",)),
    ("prescriptions", ("drug",)),
    ("cost", ("hadm_id",)),
    ("cost", ("event_type", "event_id")),
    ("chartevents", ("stay_id", "itemid")),
    ("chartevents", ("itemid",)),
    ("inputevents", ("stay_id",)),
    ("inputevents", ("itemid",)),
    ("outputevents", ("stay_id",)),
    ("outputevents", ("itemid",)),
    ("microbiologyevents", ("hadm_id",)),
    ("icustays", ("hadm_id",)),
    ("icustays", ("stay_id",)),
    ("transfers", ("hadm_id",)),
]
