"""Import the MIMIC-IV demo (PhysioNet v2.2, ``hosp/`` and ``icu/`` CSVs) into EHRSQL-2024's
17-table schema, reproducing the preprocessing of the EHRSQL-2024 shared task so that its
published answers hold on the result.

What EHRSQL-2024 did (glee4810/ehrsql-2024 ``preprocess/``, run with ``--num_patient 100
--timeshift --start_year 2100 --time_span 0 --current_time "2100-12-31 23:59:00"
--cur_patient_ratio 0.1``), as reproduced here
------------------------------------------------------------------------------------------
* Every CSV is read with pandas' default NA tokens; string values are lower-cased and
  stripped. Each table's ``row_id`` is 0, 1, 2 ... in file order after its filters.
* **Time shift** — per patient, all times move by ``(2100 - Y) * 365`` days, ``Y`` the year of
  the patient's first admission (so each patient's first admission falls in 2100; days of the
  week and leap days are not preserved). The random year draw of the original
  (``numpy.random.default_rng(0)``, one draw per patient in admissions-file order, all 2100
  because ``time_span`` is 0) is replayed because the same generator then picks the patients
  and draws the costs.
* **Current time cap** — a time after ``2100-12-31 23:59:00`` becomes NULL; admissions, ICU
  stays, transfers and events whose key time is NULL are dropped (a NULL ``dischtime`` marks a
  patient still in hospital, whose ``discharge_location`` is then NULL too); events before
  ``2100-01-01`` are dropped.
* **Patients** — 10 "current" patients (an admission without discharge) and 90 others are
  drawn with that generator (all of them when fewer exist). ``dob`` is January 1 of
  ``anchor_year - anchor_age`` plus a day offset (Python's ``random`` seeded 0), shifted;
  ``admissions.age = year(admittime) - anchor_year + anchor_age`` (before the shift).
* **Dictionaries** — ICD codes become ``icd<version>|<code>``; duplicate codes and duplicate
  long titles keep their first row; three diagnosis titles that also are procedure titles are
  left out; ``d_items`` keeps items linked to inputevents/outputevents/chartevents. Labels that
  occur in more than one of d_labitems, d_items and prescriptions are kept in one of them only
  (:data:`AMBIGUOUS_LABELS`, EHRSQL-2024's own assignment).
* **Events** — diagnoses are charted at the admission time; procedures at their chart date,
  or the discharge time when that date lies outside the admission; labevents need hadm_id, a
  numeric value and a unit; prescriptions need start/stop times, dose, unit and route, keep
  integer doses only (thousands separators removed) and, per drug, the most frequent unit
  (first seen on ties); inputevents/outputevents keep rows in ``ml`` with a known item;
  microbiology uses ``chartdate`` when ``charttime`` is missing; chartevents keep nine vital
  sign / weight / height items (:data:`CHART_ITEMS`).
* **Values as EHRSQL-2024 stored them** — its tables went through CSV files and
  ``pandas.to_sql``, so a dose is text such as ``'2.0'``; ids and other INT columns are
  integers.
* **Cost** — one row per diagnosis, lab, procedure and prescription event; per event type a
  mean from ``rng.poisson(10)`` and per item (sorted) ``round(rng.normal(mean, 1), 2)``, from
  the same generator, in that order.

``icu/chartevents.csv.gz`` is optional (the reference mirror lacks it): without it the
``chartevents`` table is empty and the manifest says so. The importer reads whole tables with
pandas: it is meant for the 100-patient demo (a few seconds), not the full MIMIC-IV.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError

CURRENT_TIME = "2100-12-31 23:59:00"
START_TIME = "2100-01-01 00:00:00"
START_YEAR = 2100
N_PATIENTS = 100
CURRENT_PATIENT_RATIO = 0.1
_TFMT = "%Y-%m-%d %H:%M:%S"

#: chartevents items EHRSQL-2024 keeps (label -> itemid)
CHART_ITEMS: dict[str, int] = {
    "temperature celsius": 223762, "o2 saturation pulseoxymetry": 220277,
    "heart rate": 220045, "respiratory rate": 220210,
    "arterial blood pressure systolic": 220050, "arterial blood pressure diastolic": 220051,
    "arterial blood pressure mean": 220052, "daily weight": 224639, "height (cm)": 226730,
}

#: labels found in more than one of d_labitems / d_items / prescriptions.drug, and the one
#: table EHRSQL-2024 keeps each in (the others drop it)
AMBIGUOUS_LABELS: dict[str, tuple[str, ...]] = {
    "labevents": (
        "albumin", "carbamazepine", "estradiol", "factor xiii", "iron", "lithium", "magnesium",
        "oxycodone", "phenytoin", "sodium", "testosterone", "theophylline", "thrombin",
        "tobramycin", "valproic acid"),
    "prescriptions": (
        "acetaminophen", "amikacin", "d", "digoxin", "gentamicin", "heparin", "insulin",
        "lidocaine", "methotrexate", "phenobarbital", "potassium", "primidone", "procainamide",
        "progesterone", "quinidine", "test", "vancomycin", "zinc"),
    "inputevents": (
        "acetylcysteine", "acyclovir", "adenosine", "albumin 25%", "albumin 5%", "ambisome",
        "aminophylline", "amiodarone", "ampicillin", "argatroban", "atovaquone", "atropine",
        "azithromycin", "aztreonam", "calcium chloride", "calcium gluconate", "caspofungin",
        "cefazolin", "cefepime", "ceftaroline", "ceftazidime", "ceftriaxone", "chloroquine",
        "ciprofloxacin", "cisatracurium", "citrate", "clindamycin", "colistin",
        "cyclosporine", "d5 1/2ns", "d5 1/4ns", "d5lr", "d5ns", "daptomycin", "dextrose 5%",
        "dextrose 50%", "dilantin", "diltiazem", "dobutamine", "dopamine", "doxycycline",
        "ensure", "epinephrine", "epoprostenol (veletri)", "erythromycin", "esmolol",
        "factor viii", "fentanyl", "fluconazole", "folate", "folic acid", "fondaparinux",
        "foscarnet", "fosphenytoin", "heparin sodium", "hydralazine",
        "hydrochloric acid", "hydromorphone (dilaudid)", "isoniazid", "keflex", "ketamine",
        "labetalol", "lepirudin", "levofloxacin", "linezolid", "lr", "magnesium sulfate",
        "mannitol", "mannitol 20%", "meropenem", "metoprolol", "metronidazole", "micafungin",
        "milrinone", "morphine sulfate", "moxifloxacin", "multivitamins", "nafcillin",
        "nesiritide", "nicardipine", "nitroglycerin", "norepinephrine", "octreotide",
        "oxacillin", "pamidronate", "penicillin g potassium", "phenylephrine",
        "potassium acetate", "potassium chloride", "potassium phosphate", "propofol",
        "protamine sulfate", "pyrazinamide", "ranitidine", "ribavirin", "rifampin",
        "rocuronium", "sodium acetate", "sodium bicarbonate 8.4%", "solution",
        "sterile water", "tamiflu", "thiamine", "tigecycline", "vasopressin", "verapamil",
        "voriconazole"),
}
_KEEP_IN = {label: table for table, labels in AMBIGUOUS_LABELS.items() for label in labels}
_DIAGNOSIS_TITLES_DROPPED = ("artificial insemination", "dental examination",
                             "insertion of intrauterine contraceptive device")

TABLES = ("patients", "admissions", "d_icd_diagnoses", "d_icd_procedures", "d_items",
          "d_labitems", "diagnoses_icd", "procedures_icd", "labevents", "prescriptions", "cost",
          "chartevents", "inputevents", "outputevents", "microbiologyevents", "icustays",
          "transfers")
_OPTIONAL = {"icu/chartevents"}


class _Source:
    """The demo's CSV files (``hosp/x.csv[.gz]``, ``icu/x.csv[.gz]``), read as EHRSQL did."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs: list[dict[str, Any]] = []
        self.missing: list[str] = []

    def path(self, name: str) -> Path | None:
        for suffix in (".csv.gz", ".csv"):
            p = self.root / f"{name}{suffix}"
            if p.is_file():
                return p
        return None

    def read(self, name: str, columns: list[str]) -> Any:
        import pandas as pd

        p = self.path(name)
        if p is None:
            if name in _OPTIONAL:
                self.missing.append(name)
                return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            raise ConfigurationError(
                f"{self.root} has no {name}.csv(.gz); pass the MIMIC-IV demo's root folder "
                "(holding hosp/ and icu/)")
        try:
            df = pd.read_csv(p, usecols=columns, dtype=str, keep_default_na=True)
        except ValueError as exc:
            raise ConfigurationError(f"{p}: {str(exc)[:200]}") from None
        self.inputs.append({"table": name, "path": str(p), "bytes": p.stat().st_size,
                            "sha256": _home.sha256_file(p), "rows_read": len(df)})
        for c in columns:  # EHRSQL: x.lower().strip() on every string value
            df[c] = df[c].str.lower().str.strip()
        return df


def _na_tokens() -> frozenset[str]:
    from pandas._libs.parsers import STR_NA_VALUES

    return frozenset(STR_NA_VALUES)


def _shift(values: Any, subjects: Any, offsets: dict[int, int]) -> list[str | None]:
    """EHRSQL's adjust_time: add the patient's offset (minutes); NULL past the current time
    or for a patient without an offset."""
    out: list[str | None] = []
    for v, s in zip(values, subjects, strict=True):
        if not isinstance(v, str) or not v or s not in offsets:
            out.append(None)
            continue
        t = str(_dt.datetime.strptime(v, _TFMT) + _dt.timedelta(minutes=offsets[s]))
        out.append(None if t > CURRENT_TIME else t)
    return out


def _after_start(df: Any, col: str) -> Any:
    """Rows whose ``col`` is a time on or after the start (2100-01-01)."""
    return df[_mask([isinstance(t, str) and t >= START_TIME for t in df[col]])]


def _dob(year: int) -> str:
    """EHRSQL's random day of birth: January 1 plus randint(0, days in year) (seeded 0)."""
    start = _dt.datetime(year, 1, 1)
    days = (_dt.datetime(year, 12, 31) - start).days + 1
    return (start + _dt.timedelta(days=random.Random(0).randint(0, days))).strftime(_TFMT)


def _dose_text(v: Any) -> str | None:
    """An integer dose (thousands separators removed) as EHRSQL-2024 stored it: ``'2.0'``
    (an int column with missing values became float before it was written)."""
    if not isinstance(v, str):
        return None
    d = v.replace(",", "")
    return f"{float(int(d))!r}" if d.isnumeric() else None


class _Builder:
    def __init__(self, src: _Source) -> None:
        import numpy as np

        self.src = src
        self.rng = np.random.default_rng(0)
        self.tables: dict[str, Any] = {}
        self.na = _na_tokens()

    # -- admissions, patients, icustays, transfers ---------------------------------------
    def admissions(self) -> None:
        import numpy as np

        pats = self.src.read("hosp/patients",
                             ["subject_id", "gender", "anchor_age", "anchor_year", "dod"])
        pats["subject_id"] = pats["subject_id"].astype(int)
        anchor_year = dict(zip(pats["subject_id"], pats["anchor_year"].astype(int), strict=True))
        anchor_age = dict(zip(pats["subject_id"], pats["anchor_age"].astype(int), strict=True))
        pats["dob"] = [_dob(anchor_year[s] - anchor_age[s]) for s in pats["subject_id"]]
        pats["dod"] = [f"{d[:10]} 00:00:00" if isinstance(d, str) else None for d in pats["dod"]]

        adm = self.src.read("hosp/admissions", [
            "subject_id", "hadm_id", "admittime", "dischtime", "admission_type",
            "admission_location", "discharge_location", "insurance", "language",
            "marital_status"])
        adm["subject_id"] = adm["subject_id"].astype(int)
        adm["hadm_id"] = adm["hadm_id"].astype(int)
        adm["age"] = [int(t[:4]) - anchor_year[s] + anchor_age[s]
                      for s, t in zip(adm["subject_id"], adm["admittime"], strict=True)]
        self.admit = dict(zip(adm["hadm_id"], adm["admittime"], strict=True))
        self.disch = dict(zip(adm["hadm_id"], adm["dischtime"], strict=True))

        icu = self.src.read("icu/icustays", ["subject_id", "hadm_id", "stay_id", "first_careunit",
                                             "last_careunit", "intime", "outtime"])
        trn = self.src.read("hosp/transfers", ["subject_id", "hadm_id", "transfer_id",
                                               "eventtype", "careunit", "intime", "outtime"])
        trn = trn[trn["intime"].notna()]

        # the offsets: one (replayed) draw per patient, in admissions-file order
        self.offsets: dict[int, int] = {}
        first = adm.groupby("subject_id", sort=False)["admittime"].min()
        for s in adm["subject_id"].unique():
            year = int(self.rng.choice(range(START_YEAR, START_YEAR + 1), p=np.array([1.0])))
            earliest = int(first[s][:4])
            self.offsets[int(s)] = (year - earliest) * 365 * 24 * 60

        o = self.offsets
        pats["dob"] = _shift(pats["dob"], pats["subject_id"], o)
        pats["dod"] = _shift(pats["dod"], pats["subject_id"], o)
        pats = pats[pats["dob"].notna()]
        adm["admittime"] = _shift(adm["admittime"], adm["subject_id"], o)
        adm = adm[adm["admittime"].notna()]
        adm["dischtime"] = _shift(adm["dischtime"], adm["subject_id"], o)
        adm.loc[adm["dischtime"].isna(), "discharge_location"] = None
        for df in (icu, trn):
            df["subject_id"] = df["subject_id"].astype(int)
            df["intime"] = _shift(df["intime"], df["subject_id"], o)
            df["outtime"] = _shift(df["outtime"], df["subject_id"], o)
        icu = icu[icu["intime"].notna()]
        trn = trn[trn["intime"].notna()]

        # the cohort: 10 "current" patients and 90 others, drawn as EHRSQL did
        n_cur = int(N_PATIENTS * CURRENT_PATIENT_RATIO)
        open_ = adm["subject_id"][adm["dischtime"].isna()].unique()
        try:
            cur = self.rng.choice(open_, n_cur, replace=False).tolist()
        except ValueError:
            cur = open_.tolist()
        closed = adm["subject_id"][adm["dischtime"].notna()
                                   & ~adm["subject_id"].isin(cur)].unique()
        try:
            rest = self.rng.choice(closed, N_PATIENTS - n_cur, replace=False).tolist()
        except ValueError:
            rest = closed.tolist()
        self.patients = set(int(s) for s in cur + rest)
        pats = pats[pats["subject_id"].isin(self.patients)]
        adm = adm[adm["subject_id"].isin(self.patients)]
        self.hadms = set(int(h) for h in adm["hadm_id"])
        icu = icu[_in(icu["hadm_id"], self.hadms)]
        trn = trn[_in(trn["hadm_id"], self.hadms)]
        self.put("patients", pats, ["subject_id", "gender", "dob", "dod"])
        self.put("admissions", adm, ["subject_id", "hadm_id", "admittime", "dischtime",
                                     "admission_type", "admission_location",
                                     "discharge_location", "insurance", "language",
                                     "marital_status", "age"])
        self.put("icustays", icu, ["subject_id", "hadm_id", "stay_id", "first_careunit",
                                   "last_careunit", "intime", "outtime"])
        self.put("transfers", trn, ["subject_id", "hadm_id", "transfer_id", "eventtype",
                                    "careunit", "intime", "outtime"])

    # -- dictionaries ---------------------------------------------------------------------
    def dictionaries(self) -> None:
        for table, name in (("d_icd_diagnoses", "hosp/d_icd_diagnoses"),
                            ("d_icd_procedures", "hosp/d_icd_procedures")):
            d = self.src.read(name, ["icd_code", "icd_version", "long_title"])
            if table == "d_icd_diagnoses":
                d = d[~d["long_title"].isin(_DIAGNOSIS_TITLES_DROPPED)]
            d["icd_code"] = "icd" + d["icd_version"].astype(str) + "|" + d["icd_code"].astype(str)
            d = d.dropna(subset=["icd_code", "long_title"])
            d = d.drop_duplicates(subset=["icd_code"]).drop_duplicates(subset=["long_title"])
            self.put(table, d, ["icd_code", "long_title"])
        lab = self.src.read("hosp/d_labitems", ["itemid", "label"])
        lab = lab[lab["label"].notna()]
        lab = lab[_mask([_KEEP_IN.get(x, "labevents") == "labevents" for x in lab["label"]])]
        self.put("d_labitems", lab, ["itemid", "label"])
        items = self.src.read("icu/d_items", ["itemid", "label", "abbreviation", "linksto"])
        items = items[items["label"].notna()]
        items = items[items["linksto"].isin(["inputevents", "outputevents", "chartevents"])]
        items = items[_mask([_KEEP_IN.get(x, "inputevents") == "inputevents"
                             for x in items["label"]])]
        self.put("d_items", items, ["itemid", "label", "abbreviation", "linksto"])
        self.lab_items = set(int(i) for i in lab["itemid"])
        self.icu_items = set(int(i) for i in items["itemid"])
        self.dx_codes = set(self.tables["d_icd_diagnoses"]["icd_code"])
        self.px_codes = set(self.tables["d_icd_procedures"]["icd_code"])

    # -- events ---------------------------------------------------------------------------
    def events(self) -> None:
        o = self.offsets
        dx = self.src.read("hosp/diagnoses_icd", ["subject_id", "hadm_id", "icd_version",
                                                  "icd_code"])
        dx["icd_code"] = "icd" + dx["icd_version"] + "|" + dx["icd_code"]
        dx = _ints(dx.dropna(subset=["icd_code"]), "subject_id", "hadm_id")
        dx["charttime"] = [self.admit.get(h) for h in dx["hadm_id"]]
        dx = dx[dx["icd_code"].isin(self.dx_codes) & _in(dx["hadm_id"], self.hadms)]
        dx["charttime"] = _shift(dx["charttime"], dx["subject_id"], o)
        self.put("diagnoses_icd", _after_start(dx, "charttime"),
                 ["subject_id", "hadm_id", "icd_code", "charttime"])

        px = self.src.read("hosp/procedures_icd", ["subject_id", "hadm_id", "icd_code",
                                                   "icd_version", "chartdate"])
        px["icd_code"] = "icd" + px["icd_version"] + "|" + px["icd_code"]
        px = _ints(px, "subject_id", "hadm_id")
        times = []
        for h, d in zip(px["hadm_id"], px["chartdate"], strict=True):
            t, a, e = f"{d[:10]} 00:00:00", self.admit.get(h), self.disch.get(h)
            outside = (isinstance(a, str) and t < a) or (isinstance(e, str) and t > e)
            times.append(e if outside else t)
        px["charttime"] = times
        px = px[px["icd_code"].isin(self.px_codes) & _in(px["hadm_id"], self.hadms)]
        px["charttime"] = _shift(px["charttime"], px["subject_id"], o)
        self.put("procedures_icd", _after_start(px, "charttime"),
                 ["subject_id", "hadm_id", "icd_code", "charttime"])

        lab = self.src.read("hosp/labevents", ["subject_id", "hadm_id", "itemid", "charttime",
                                               "valuenum", "valueuom"])
        lab = _ints(lab.dropna(subset=["hadm_id", "valuenum", "valueuom"]),
                    "subject_id", "hadm_id", "itemid")
        lab = lab[lab["itemid"].isin(self.lab_items) & _in(lab["hadm_id"], self.hadms)]
        lab["valuenum"] = lab["valuenum"].astype(float)
        lab["charttime"] = _shift(lab["charttime"], lab["subject_id"], o)
        self.put("labevents", _after_start(lab, "charttime"),
                 ["subject_id", "hadm_id", "itemid", "charttime", "valuenum", "valueuom"])

        rx = self.src.read("hosp/prescriptions", ["subject_id", "hadm_id", "starttime",
                                                  "stoptime", "drug", "dose_val_rx",
                                                  "dose_unit_rx", "route"])
        rx = rx[_mask([_KEEP_IN.get(x, "prescriptions") == "prescriptions" for x in rx["drug"]])]
        rx = rx.dropna(subset=["starttime", "stoptime", "dose_val_rx", "dose_unit_rx", "route"])
        rx["dose_val_rx"] = [_dose_text(v) for v in rx["dose_val_rx"]]
        rx = _ints(rx.dropna(subset=["dose_val_rx"]), "subject_id", "hadm_id")
        units: dict[str, Counter] = {}
        for d, u in zip(rx["drug"], rx["dose_unit_rx"], strict=True):
            units.setdefault(d, Counter())[u] += 1
        top = {d: c.most_common(1)[0][0] for d, c in units.items()}
        rx = rx[_mask([top.get(d) == u
                       for d, u in zip(rx["drug"], rx["dose_unit_rx"], strict=True)])]
        rx = rx[_in(rx["hadm_id"], self.hadms)]
        rx["starttime"] = _shift(rx["starttime"], rx["subject_id"], o)
        rx["stoptime"] = _shift(rx["stoptime"], rx["subject_id"], o)
        self.put("prescriptions", _after_start(rx, "starttime"),
                 ["subject_id", "hadm_id", "starttime", "stoptime", "drug", "dose_val_rx",
                  "dose_unit_rx", "route"])

        ch = self.src.read("icu/chartevents", ["subject_id", "hadm_id", "stay_id", "charttime",
                                               "itemid", "valuenum", "valueuom"])
        ch = ch.dropna()
        ch = _ints(ch, "subject_id", "hadm_id", "stay_id", "itemid")
        ch = ch[ch["itemid"].isin(set(CHART_ITEMS.values())) & ch["subject_id"].isin(self.patients)]
        ch["valuenum"] = ch["valuenum"].astype(float)
        ch["charttime"] = _shift(ch["charttime"], ch["subject_id"], o)
        ch = ch[_in(ch["hadm_id"], self.hadms)]
        self.put("chartevents", _after_start(ch, "charttime"),
                 ["subject_id", "hadm_id", "stay_id", "itemid", "charttime", "valuenum",
                  "valueuom"])

        for table, tcol, vcol, ucol in (("inputevents", "starttime", "totalamount",
                                         "totalamountuom"),
                                        ("outputevents", "charttime", "value", "valueuom")):
            ev = self.src.read(f"icu/{table}", ["subject_id", "hadm_id", "stay_id", tcol,
                                                "itemid", vcol, ucol])
            ev = ev.dropna(subset=["hadm_id", "stay_id", vcol, ucol])
            ev = _ints(ev[ev[ucol] == "ml"], "subject_id", "hadm_id", "stay_id", "itemid")
            ev = ev[ev["itemid"].isin(self.icu_items) & _in(ev["hadm_id"], self.hadms)]
            ev[vcol] = ev[vcol].astype(float)
            ev[tcol] = _shift(ev[tcol], ev["subject_id"], o)
            self.put(table, _after_start(ev, tcol),
                     ["subject_id", "hadm_id", "stay_id", tcol, "itemid", vcol, ucol])

        mb = self.src.read("hosp/microbiologyevents", ["subject_id", "hadm_id", "chartdate",
                                                       "charttime", "spec_type_desc",
                                                       "test_name", "org_name"])
        mb["charttime"] = mb["charttime"].fillna(mb["chartdate"])
        mb = _ints(mb.dropna(subset=["hadm_id"]), "subject_id", "hadm_id")
        mb = mb[_in(mb["hadm_id"], self.hadms)]
        mb["charttime"] = _shift(mb["charttime"], mb["subject_id"], o)
        self.put("microbiologyevents", _after_start(mb, "charttime"),
                 ["subject_id", "hadm_id", "charttime", "spec_type_desc", "test_name",
                  "org_name"])

    def cost(self) -> None:
        import pandas as pd

        means = self.rng.poisson(lam=10, size=4)
        parts = []
        start = 0
        for k, (table, item, tcol) in enumerate((
                ("diagnoses_icd", "icd_code", "charttime"), ("labevents", "itemid", "charttime"),
                ("procedures_icd", "icd_code", "charttime"),
                ("prescriptions", "drug", "starttime"))):
            ev = self.tables[table]
            prices = {x: round(float(self.rng.normal(loc=means[k], scale=1.0)), 2)
                      for x in sorted(ev[item].unique())}
            parts.append(pd.DataFrame({
                "row_id": range(start, start + len(ev)), "subject_id": ev["subject_id"].values,
                "hadm_id": ev["hadm_id"].values, "event_type": table,
                "event_id": ev["row_id"].values, "chargetime": ev[tcol].values,
                "cost": [prices[x] for x in ev[item]]}))
            start += len(ev)
        self.tables["cost"] = pd.concat(parts, ignore_index=True)

    def put(self, table: str, df: Any, columns: list[str]) -> None:
        df = df[columns].copy()
        df.insert(0, "row_id", range(len(df)))
        self.tables[table] = df.reset_index(drop=True)


def _mask(flags: list[bool]) -> Any:
    import numpy as np

    return np.array(flags, dtype=bool)


def _ints(df: Any, *cols: str) -> Any:
    df = df.dropna(subset=list(cols)) if cols else df
    df = df.copy()
    for c in cols:
        df[c] = df[c].astype(float).astype(int)
    return df


def _in(values: Any, allowed: set[int]) -> Any:
    """A boolean mask: ``values`` (ids, possibly missing or text) that are in ``allowed``."""
    import numpy as np

    out = []
    for v in values:
        try:
            out.append(int(float(v)) in allowed)
        except (TypeError, ValueError):
            out.append(False)
    return np.array(out, dtype=bool)


def _sql_value(v: Any, na: frozenset[str]) -> Any:
    """A value as EHRSQL-2024's CSV round trip left it (NA tokens of the lower-cased text
    read back as NULL; numpy scalars as Python numbers)."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, str):
        return None if v in na else v
    if hasattr(v, "item"):
        return v.item()
    return v


def _write(conn: sqlite3.Connection, tables: dict[str, Any], na: frozenset[str]) -> dict[str, int]:
    from medagentgym.data import schema

    counts = {}
    for table in TABLES:
        cols = schema.columns("mimic_iv", table)
        df = tables[table]
        rows = ([_sql_value(v, na) for v in row] for row in df[cols].itertuples(index=False))
        conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                         f"({', '.join('?' * len(cols))})", rows)
        counts[table] = len(df)
    return counts


def import_mimic_iv(src_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None,
                    progress: Any = None, *, seed: int = 0) -> Any:
    """Import the MIMIC-IV demo CSVs (``src_dir`` holding ``hosp/`` and ``icu/``) into
    ``out_path`` (default ``db/mimic_iv.sqlite`` in the data home) with EHRSQL-2024's
    preprocessing (module docstring). ``seed`` must be 0: EHRSQL-2024's random draws (time
    shift, cohort, costs) are replayed, and its answers hold only for them."""
    from medagentgym.data import schema
    from medagentgym.data.importers import ImportReport

    if seed != 0:
        raise ConfigurationError("the MIMIC-IV import replays EHRSQL-2024's random draws; "
                                 "it takes no --seed (leave it at 0)")
    root = Path(src_dir).expanduser().absolute()
    if (root / "mimic-iv-clinical-database-demo-2.2").is_dir():
        root = root / "mimic-iv-clinical-database-demo-2.2"
    if not (root / "hosp").is_dir() or not (root / "icu").is_dir():
        raise ConfigurationError(f"{root} is not the MIMIC-IV demo (expected hosp/ and icu/ "
                                 "folders of CSV files)")
    out = (Path(out_path) if out_path is not None else _home.db_path("mimic_iv")).absolute()
    started = time.monotonic()
    src = _Source(root)
    b = _Builder(src)
    steps = (("admissions", b.admissions), ("dictionaries", b.dictionaries),
             ("events", b.events), ("cost", b.cost))
    for i, (stage, step) in enumerate(steps):
        if progress is not None:
            progress(stage, i, len(steps))
        step()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _home.file_lock(out), _home.atomic_path(out) as tmp:
        conn = sqlite3.connect(tmp)
        try:
            schema.create_tables(conn, "mimic_iv")
            with conn:
                counts = _write(conn, b.tables, b.na)
            schema.create_indexes(conn, "mimic_iv")
            conn.commit()
        finally:
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            _home.manifest_path(out).unlink()
    if progress is not None:
        progress("done", len(steps), len(steps))
    seconds = round(time.monotonic() - started, 3)
    missing = ["chartevents"] if "icu/chartevents" in src.missing else []
    notes = (["icu/chartevents is absent from the input: the chartevents table is empty "
              "(questions about vital signs, weight and height cannot be answered)"]
             if missing else [])
    with _home.file_lock(out):
        _home.write_manifest(out, kind="database", builder=f"{__name__}.import_mimic_iv",
                             inputs=src.inputs, source_dir=str(root), schema="mimic_iv",
                             tables=counts, missing_tables=missing,
                             parameters={"current_time": CURRENT_TIME, "start_year": START_YEAR,
                                         "patients": N_PATIENTS},
                             seconds=seconds, notes=notes)
    return ImportReport(path=out, database="mimic_iv", tables=counts, missing_tables=missing,
                        seconds=seconds, notes=notes, inputs=src.inputs)
