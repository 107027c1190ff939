"""Synthetic MIMIC-IV in EHRSQL-2024's schema (offline stand-in for the imported demo).

Deterministic for ``(patients, seed)``. Like the imported demo after EHRSQL-2024's
preprocessing, every patient's stays fall in 2100 and the current time is
``2100-12-31 23:59:00`` (about 10 % of the patients are still in hospital: no discharge
time). Names (drugs, labs, ICU items, diagnoses, procedures, specimens, care units) and the
first patient ids come from :mod:`.mimic_iv_vocab` — what EHRSQL-2024's questions ask about —
so that many of the release's questions find rows here; the values (times, doses, lab
results, costs) are random. Nothing here is MIMIC data.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from .. import schema as _schema
from . import mimic_iv_vocab as V

NOW = "2100-12-31 23:59:00"
GENERATOR_VERSION = 1
_T0 = _dt.datetime(2100, 1, 1)
_TFMT = "%Y-%m-%d %H:%M:%S"

#: vital-sign items of chartevents: label -> (itemid, unit, low, high)
_VITALS = {
    "temperature celsius": (223762, "°c", 35.0, 39.5),
    "o2 saturation pulseoxymetry": (220277, "%", 88.0, 100.0),
    "heart rate": (220045, "bpm", 50.0, 130.0),
    "respiratory rate": (220210, "insp/min", 8.0, 30.0),
    "arterial blood pressure systolic": (220050, "mmhg", 80.0, 170.0),
    "arterial blood pressure diastolic": (220051, "mmhg", 40.0, 100.0),
    "arterial blood pressure mean": (220052, "mmhg", 55.0, 120.0),
    "daily weight": (224639, "kg", 45.0, 130.0),
    "height (cm)": (226730, "cm", 150.0, 195.0),
}
_UNITS = ("mg", "g", "ml", "meq", "unit", "mcg", "tab", "cap")
_LAB_UNITS = ("mg/dl", "meq/l", "%", "k/ul", "g/dl", "iu/l", "units", "mmol/l")
_TESTS = ("blood culture, routine", "urine culture", "gram stain", "mrsa screen",
          "respiratory culture", "r/o vancomycin resistant enterococcus", "fungal culture")
_ORGANISMS = (None, None, "escherichia coli", "staphylococcus aureus, coag +",
              "klebsiella pneumoniae", "enterococcus sp.", "yeast", "pseudomonas aeruginosa")
_ADM_TYPES = ("ew emer.", "eu observation", "observation admit", "urgent", "elective",
              "surgical same day admission", "direct emer.")
_DISCH = ("home", "home health care", "skilled nursing facility", "rehab", "died")
_INSURANCE = ("medicare", "medicaid", "other")
_MARITAL = ("married", "single", "widowed", "divorced", None)


def _t(dt: _dt.datetime) -> str:
    return dt.strftime(_TFMT)


class _Gen:
    def __init__(self, patients: int, seed: int) -> None:
        self.rng = random.Random(f"mimic_iv:{seed}")
        self.n = patients
        self.rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _schema.SCHEMAS["mimic_iv"]}
        self.now = _dt.datetime.strptime(NOW, _TFMT)

    def add(self, table: str, *values: Any) -> int:
        rows = self.rows[table]
        rows.append((len(rows), *values))
        return len(rows) - 1

    def dictionaries(self) -> None:
        r = self.rng
        self.dx = {t: f"icd10|d{i:05d}" for i, t in enumerate(V.DIAGNOSES)}
        self.px = {t: f"icd10|p{i:05d}" for i, t in enumerate(V.PROCEDURES)}
        for t, c in self.dx.items():
            self.add("d_icd_diagnoses", c, t)
        for t, c in self.px.items():
            self.add("d_icd_procedures", c, t)
        self.labs = {label: 50800 + i for i, label in enumerate(V.LAB_LABELS)}
        self.lab_unit = {label: r.choice(_LAB_UNITS) for label in V.LAB_LABELS}
        for label, itemid in self.labs.items():
            self.add("d_labitems", itemid, label)
        self.items: dict[str, tuple[int, str]] = {}
        for i, (label, linksto) in enumerate(V.ICU_ITEMS):
            itemid = _VITALS[label][0] if label in _VITALS else 225000 + i
            self.items[label] = (itemid, linksto)
            self.add("d_items", itemid, label, label[:40], linksto)
        for label, (itemid, *_rest) in _VITALS.items():
            if label not in self.items:
                self.items[label] = (itemid, "chartevents")
                self.add("d_items", itemid, label, label[:40], "chartevents")
        self.inputs = [lb for lb, (_, k) in self.items.items() if k == "inputevents"]
        self.outputs = [lb for lb, (_, k) in self.items.items() if k == "outputevents"]
        self.drug_unit = {d: r.choice(_UNITS) for d in V.DRUGS}
        self.drug_route = {d: r.choice(V.ROUTES) for d in V.DRUGS}
        self.price: dict[tuple[str, Any], float] = {}
        self.means = {k: r.randint(5, 15) for k in ("diagnoses_icd", "labevents",
                                                     "procedures_icd", "prescriptions")}

    def cost(self, kind: str, item: Any, subject: int, hadm: int, event: int, when: str) -> None:
        key = (kind, item)
        if key not in self.price:
            self.price[key] = round(self.rng.gauss(self.means[kind], 1.0), 2)
        self.add("cost", subject, hadm, kind, event, when, self.price[key])

    def patient(self, k: int) -> None:
        r = self.rng
        subject = V.PATIENT_IDS[k] if k < len(V.PATIENT_IDS) else 10050000 + k
        age = r.randint(20, 91)
        first = _T0 + _dt.timedelta(minutes=r.randint(0, 300 * 24 * 60))
        dob = _dt.datetime(2100 - age, 1, 1) + _dt.timedelta(days=r.randint(0, 364))
        current = r.random() < 0.1
        n_adm = r.choice((1, 1, 1, 2, 2, 3))
        t = first
        last_disch = None
        for j in range(n_adm):
            admit = t
            stay = _dt.timedelta(hours=r.randint(20, 24 * 14))
            disch: _dt.datetime | None = admit + stay
            is_last = j == n_adm - 1
            if (is_last and current) or disch > self.now:
                disch = None
            self.admission(subject, age + (admit.year - 2100), admit, disch)
            last_disch = disch
            if disch is None:
                break
            t = disch + _dt.timedelta(days=r.randint(5, 60))
            if t > self.now - _dt.timedelta(days=2):
                break
        died = last_disch is not None and r.random() < 0.1
        dod = _t(last_disch.replace(hour=0, minute=0, second=0)) if died else None
        self.add("patients", subject, r.choice("mf"), _t(dob), dod)

    def admission(self, subject: int, age: int, admit: _dt.datetime,
                  disch: _dt.datetime | None) -> None:
        r = self.rng
        hadm = 20000000 + len(self.rows["admissions"]) * 7 + r.randint(0, 6)
        end = disch or self.now
        self.add("admissions", subject, hadm, _t(admit), _t(disch) if disch else None,
                 r.choice(_ADM_TYPES), r.choice(V.ADMISSION_LOCATIONS),
                 r.choice(_DISCH) if disch else None, r.choice(_INSURANCE), "english",
                 r.choice(_MARITAL), age)

        def when() -> _dt.datetime:
            span = max(1, int((end - admit).total_seconds() // 60))
            return admit + _dt.timedelta(minutes=r.randint(0, span))

        for title in r.sample(V.DIAGNOSES, r.randint(3, 9)):
            e = self.add("diagnoses_icd", subject, hadm, self.dx[title], _t(admit))
            self.cost("diagnoses_icd", self.dx[title], subject, hadm, e, _t(admit))
        for title in r.sample(V.PROCEDURES, r.randint(0, 4)):
            tt = _t(when())
            e = self.add("procedures_icd", subject, hadm, self.px[title], tt)
            self.cost("procedures_icd", self.px[title], subject, hadm, e, tt)
        for label in r.sample(V.LAB_LABELS, r.randint(6, 16)):
            for _ in range(r.randint(1, 4)):
                tt = _t(when())
                e = self.add("labevents", subject, hadm, self.labs[label], tt,
                             round(r.uniform(0.1, 150.0), r.choice((0, 1, 2))),
                             self.lab_unit[label])
                self.cost("labevents", self.labs[label], subject, hadm, e, tt)
        for drug in r.sample(V.DRUGS, r.randint(4, 14)):
            start = when()
            stop = start + _dt.timedelta(hours=r.randint(1, 120))
            tt = _t(start)
            e = self.add("prescriptions", subject, hadm, tt,
                         _t(stop) if stop <= self.now else None, drug,
                         f"{float(r.choice((1, 2, 5, 10, 20, 40, 100, 500))):.1f}",
                         self.drug_unit[drug], self.drug_route[drug])
            self.cost("prescriptions", drug, subject, hadm, e, tt)
        for _ in range(r.randint(0, 3)):
            self.add("microbiologyevents", subject, hadm, _t(when()), r.choice(V.SPECIMENS),
                     r.choice(_TESTS), r.choice(_ORGANISMS))
        units = r.sample(V.CAREUNITS, 2)
        self.add("transfers", subject, hadm, 30000000 + len(self.rows["transfers"]), "admit",
                 units[0], _t(admit), _t(admit + (end - admit) / 3))
        self.add("transfers", subject, hadm, 30000000 + len(self.rows["transfers"]),
                 "transfer", units[1], _t(admit + (end - admit) / 3),
                 _t(disch) if disch else None)
        if r.random() < 0.6:
            self.icu(subject, hadm, admit + (end - admit) / 4, disch, end, r.choice(units))

    def icu(self, subject: int, hadm: int, intime: _dt.datetime, disch: _dt.datetime | None,
            end: _dt.datetime, unit: str) -> None:
        r = self.rng
        stay = 30000000 + len(self.rows["icustays"]) * 11 + r.randint(0, 10)
        out = intime + (end - intime) / 2 if disch else None
        self.add("icustays", subject, hadm, stay, unit, unit, _t(intime), _t(out) if out else None)
        stop = out or end
        span = max(60, int((stop - intime).total_seconds() // 60))
        for label, (itemid, uom, lo, hi) in _VITALS.items():
            for _ in range(1 if label in ("height (cm)", "daily weight") else r.randint(3, 10)):
                tt = intime + _dt.timedelta(minutes=r.randint(0, span))
                self.add("chartevents", subject, hadm, stay, itemid, _t(tt),
                         round(r.uniform(lo, hi), 1), uom)
        for label in r.sample(self.inputs, min(len(self.inputs), r.randint(3, 8))):
            tt = intime + _dt.timedelta(minutes=r.randint(0, span))
            self.add("inputevents", subject, hadm, stay, _t(tt), self.items[label][0],
                     round(r.uniform(1, 1000), 2), "ml")
        for label in r.sample(self.outputs, min(len(self.outputs), r.randint(1, 4))):
            for _ in range(r.randint(1, 3)):
                tt = intime + _dt.timedelta(minutes=r.randint(0, span))
                self.add("outputevents", subject, hadm, stay, _t(tt), self.items[label][0],
                         float(r.randint(5, 900)), "ml")


def build_mimic_iv(path: str | os.PathLike[str], patients: int = 100, seed: int = 0) -> Path:
    """Write the synthetic MIMIC-IV database to ``path`` (atomically); returns the path."""
    if patients < 1:
        raise ValueError("patients must be >= 1")
    g = _Gen(patients, seed)
    g.dictionaries()
    for k in range(patients):
        g.patient(k)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            _schema.create_tables(conn, "mimic_iv")
            with conn:
                for table, rows in g.rows.items():
                    cols = _schema.columns("mimic_iv", table)
                    conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                     f"({', '.join('?' * len(cols))})", rows)
            _schema.create_indexes(conn, "mimic_iv")
            conn.execute(f"PRAGMA user_version = {GENERATOR_VERSION}")
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
