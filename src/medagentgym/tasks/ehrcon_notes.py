"""EHRCon tasks generated from a MIMIC-III database: clinical notes rendered from table rows,
with inconsistencies injected and verified against the database.

A *mention* is one line of a note that states one entity and its fields:

=============  =====================================  ===========================================
kind           entity (the table)                     fields stated
=============  =====================================  ===========================================
lab            a ``d_labitems.label`` (``labevents``)  value (``valuenum``), date (of ``charttime``)
med            ``prescriptions.drug``                  dose (``dose_val_rx``), route, start date
micro          ``spec_type_desc``                      organism (``org_name``), date
dx             an ICD-9 title (``diagnoses_icd``)     — (existence only)
=============  =====================================  ===========================================

A mention is *consistent* when one record of the admission agrees with every stated field
(routes by family: PO and oral are one route). It is inconsistent in one of the three EHRCon
ways, which are the task categories: ``numeric`` (a value, dose or date differs), ``string``
(a route or organism differs) or ``existence`` (the admission has no record of the entity).
``n_fields`` is 1 for an absent entity, else the fewest stated fields that disagree with any
one record of the entity (0: consistent).

Sampling is label-blind where a note-only reader could see it: the record a mention starts from
is drawn first and the label after it (so every entity and value is as likely in either
label); a changed value or dose is another record's value of the same entity in the same
split, a changed date is the date of another record of the same admission. Existence
mentions draw the entity first and then an admission that has it or lacks it. Every
inconsistent mention is checked to match no record (nor, for drugs, specimens and
diagnoses, a record of a closely related entity: same first word, same ICD-9 category).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 4
CATEGORIES = ("numeric", "string", "existence")
#: share of each category in a split (labels are balanced within each)
CATEGORY_SHARE = {"numeric": 0.4, "string": 0.25, "existence": 0.35}
#: which kinds of mention carry each category (weights; a kind without data drops out)
KIND_WEIGHTS = {
    "numeric": {"lab": 0.6, "med": 0.3, "micro": 0.1},
    "string": {"med": 0.6, "micro": 0.4},
    "existence": {"lab": 0.35, "med": 0.3, "dx": 0.25, "micro": 0.1},
}
KIND_TITLES = {"lab": "laboratory result", "med": "medication", "micro": "microbiology culture",
               "dx": "diagnosis"}
REL_TOL = 0.01  # a changed value differs from every same-day value by more than 1 %

# --------------------------------------------------------------------------- vocabulary

#: route families: prescriptions.route -> family (routes outside these are not mentioned)
ROUTE_FAMILY = {
    "iv": "intravenous", "iv bolus": "intravenous", "iv drip": "intravenous",
    "ivpca": "intravenous", "ivs": "intravenous",
    "po": "oral", "oral": "oral",
    "ng": "enteral tube", "og": "enteral tube", "po/ng": "enteral tube",
    "sc": "subcutaneous", "subcut": "subcutaneous",
    "ih": "inhaled", "pr": "rectal", "tp": "topical", "td": "transdermal",
    "both eyes": "ophthalmic", "ou": "ophthalmic", "od": "ophthalmic", "os": "ophthalmic",
    "right eye": "ophthalmic", "left eye": "ophthalmic",
    "im": "intramuscular", "sl": "sublingual", "it": "intrathecal",
}
ROUTE_PHRASES = {
    "intravenous": ("IV", "intravenously"), "oral": ("PO", "by mouth", "orally"),
    "enteral tube": ("via NG tube", "per feeding tube"), "subcutaneous": ("SC", "subcutaneously"),
    "inhaled": ("inhaled", "by nebulizer"), "rectal": ("PR", "per rectum"),
    "topical": ("topically",), "transdermal": ("transdermally",),
    "ophthalmic": ("to the eyes", "ophthalmically"), "intramuscular": ("IM", "intramuscularly"),
    "sublingual": ("SL", "sublingually"), "intrathecal": ("intrathecally",),
}
LAB_ABBREVIATIONS = {
    "potassium": ("K", "K+"), "sodium": ("Na",), "chloride": ("Cl",),
    "bicarbonate": ("HCO3", "bicarb"), "glucose": ("BG",), "creatinine": ("Cr", "creat"),
    "urea nitrogen": ("BUN",), "hemoglobin": ("Hgb", "Hb"), "hematocrit": ("Hct",),
    "white blood cells": ("WBC", "white count"), "platelet count": ("Plt", "platelets"),
    "magnesium": ("Mg",), "phosphate": ("Phos",), "calcium, total": ("Ca", "total calcium"),
    "anion gap": ("AG",), "lactate": ("lactic acid",), "inr(pt)": ("INR",),
    "alanine aminotransferase (alt)": ("ALT", "SGPT"),
    "asparate aminotransferase (ast)": ("AST", "SGOT"),
    "bilirubin, total": ("T bili", "total bilirubin"), "alkaline phosphatase": ("alk phos",),
    "lactate dehydrogenase (ld)": ("LDH",), "free calcium": ("iCa", "ionized calcium"),
    "red blood cells": ("RBC",), "troponin t": ("TnT",), "creatine kinase (ck)": ("CK", "CPK"),
    "albumin": ("Alb",), "ph": ("pH",), "po2": ("pO2",), "pco2": ("pCO2",),
}
DRUG_ABBREVIATIONS = {
    "acetaminophen": ("APAP", "Tylenol"), "aspirin": ("ASA",), "vancomycin": ("vanc",),
    "potassium chloride": ("KCl",), "furosemide": ("Lasix",), "docusate sodium": ("Colace",),
    "pantoprazole": ("Protonix",), "metoprolol tartrate": ("Lopressor",),
    "magnesium sulfate": ("mag sulfate",),
}
SPECIMEN_NAMES = {
    "blood culture": ("blood culture", "BCx", "blood cx"),
    "urine": ("urine culture", "UCx", "urine cx"),
    "sputum": ("sputum culture", "sputum cx"),
    "mrsa screen": ("MRSA screen",),
    "stool": ("stool culture",),
}
ORGANISM_NAMES = {
    "staph aureus coag +": ("Staph aureus coag +", "coag-positive Staph aureus"),
    "staphylococcus, coagulase negative": ("coag-negative Staph", "CoNS"),
}
DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%b %d, %Y", "%d %b %Y")
SECTION_HEADERS = {
    "lab": ("Laboratory data:", "Labs:", "Pertinent results:"),
    "med": ("Medications:", "Meds:", "Medication changes:"),
    "micro": ("Microbiology:", "Micro:", "Cultures:"),
    "dx": ("Assessment and plan:", "Problem list:", "Diagnoses:"),
}
NOTE_TYPES = ("Physician progress note", "Discharge summary (excerpt)", "ICU progress note",
              "Nursing progress note")
FILLER = ("Patient seen and examined.", "Plan discussed with the team.",
          "Family updated at the bedside.", "Continue current management.",
          "Will follow up on pending studies.", "No acute events overnight.")
TEMPLATES = {
    "lab": ("{n} {v}{u} on {d}.", "On {d}, {n} was {v}{u}.", "{d}: {n} {v}{u}.",
            "Labs on {d} notable for {n} of {v}{u}.", "{n} measured at {v}{u} ({d}).",
            "{n} came back at {v}{u} on {d}."),
    "med": ("{n} {q} {u} {r} started on {d}.", "Started {n} {q} {u} {r} on {d}.",
            "On {d} the patient was started on {n} {q} {u} {r}.",
            "{d}: {n} {q} {u} {r} initiated.", "{n} was begun at {q} {u} {r} on {d}."),
    "micro": ("{s} from {d} grew {o}.", "{s} ({d}) positive for {o}.",
              "On {d}, {s} grew {o}.", "{s} drawn {d} with {o} isolated."),
    "dx": ("History of {t}.", "Diagnosed with {t} during this admission.",
           "Problem list includes {t}.", "Assessment: {t}.", "Active issue: {t}."),
}
_DOSE = re.compile(r"\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Fact:
    """One database record a mention can start from."""

    kind: str
    subject: int
    hadm: int
    entity: str  # lab label, drug, specimen, or ICD-9 code (dx)
    date: str = ""  # YYYY-MM-DD
    value: Any = None  # lab valuenum, drug dose text, organism
    unit: str = ""
    route: str = ""  # a route family (med)


@dataclass
class Mention:
    kind: str
    category: str
    subject: int
    hadm: int
    entity: str
    date: str = ""
    value: Any = None
    unit: str = ""
    route: str = ""
    inconsistent: bool = False
    n_fields: int = 0
    changed: tuple[str, ...] = ()


@dataclass
class Records:
    """The database's records, indexed for sampling and for checking mentions."""

    facts: dict[str, list[Fact]] = field(default_factory=dict)
    by_entity: dict[tuple[str, int, str], list[Fact]] = field(default_factory=dict)
    present: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # entities
    related: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # related keys
    dates: dict[int, list[str]] = field(default_factory=dict)  # every record date, per hadm
    kind_dates: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    dx_titles: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> titles
    codes_of_title: dict[str, set[str]] = field(default_factory=dict)
    subject_of: dict[int, int] = field(default_factory=dict)


def dx_titles(rec: Records, code: str, hadm: int, inconsistent: bool) -> list[str]:
    """The titles (long, short) of ``code`` that tell the label right: a title shared by
    several codes reads as consistent when any of them is coded in the admission."""
    if not rec.codes_of_title:
        for c, titles in rec.dx_titles.items():
            for t in titles:
                rec.codes_of_title.setdefault(t, set()).add(c)
    coded = rec.present.get(("dx", hadm), set())
    return [t for t in rec.dx_titles[code]
            if bool(rec.codes_of_title[t] & coded) != inconsistent]


def related_key(kind: str, entity: str) -> str:
    """What makes two entities too close to tell apart (existence checks)."""
    if kind == "dx":
        return entity[:3]  # the ICD-9 category
    return entity.split()[0].strip(",") if entity.split() else entity


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def load_records(db_path: Path) -> Records:
    """Every usable record of the database."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        facts: dict[str, list[Fact]] = {k: [] for k in KIND_TITLES}
        for subj, hadm, label, value, unit, day in con.execute(
                "SELECT l.subject_id, l.hadm_id, lower(d.label), l.valuenum, "
                "coalesce(l.valueuom, ''), substr(l.charttime, 1, 10) FROM labevents l "
                "JOIN d_labitems d ON d.itemid = l.itemid WHERE l.hadm_id IS NOT NULL AND "
                "l.valuenum IS NOT NULL AND l.charttime IS NOT NULL "
                "AND lower(d.label) NOT IN ('specimen type', '') ORDER BY l.row_id"):
            facts["lab"].append(Fact("lab", subj, hadm, _norm(label), day, float(value), unit))
        for subj, hadm, drug, dose, unit, route, day in con.execute(
                "SELECT subject_id, hadm_id, lower(trim(drug)), trim(dose_val_rx), "
                "lower(coalesce(dose_unit_rx, '')), lower(trim(route)), substr(startdate, 1, 10) "
                "FROM prescriptions WHERE hadm_id IS NOT NULL AND startdate IS NOT NULL "
                "AND drug IS NOT NULL AND dose_val_rx IS NOT NULL AND route IS NOT NULL "
                "ORDER BY row_id"):
            family, drug = ROUTE_FAMILY.get(route), _norm(drug)
            if family and drug and _DOSE.fullmatch(dose) and not re.search(r"\d", unit):
                facts["med"].append(Fact("med", subj, hadm, drug, day, dose, unit, family))
        seen: set[tuple] = set()
        all_specimens: dict[int, set[str]] = defaultdict(set)
        for subj, hadm, spec, org, day in con.execute(
                "SELECT subject_id, hadm_id, lower(trim(spec_type_desc)), lower(trim(org_name)), "
                "substr(charttime, 1, 10) FROM microbiologyevents WHERE hadm_id IS NOT NULL "
                "AND spec_type_desc IS NOT NULL AND charttime IS NOT NULL ORDER BY row_id"):
            spec, org = _norm(spec), _norm(org or "")
            all_specimens[hadm].add(spec)
            key = (hadm, spec, day, org)
            if org and key not in seen:
                seen.add(key)
                facts["micro"].append(Fact("micro", subj, hadm, spec, day, org))
        titles = {code: (_norm(short), _norm(long)) for code, short, long in
                  con.execute("SELECT icd9_code, short_title, long_title FROM d_icd_diagnoses")
                  if code and short and long}
        for subj, hadm, code in con.execute(
                "SELECT DISTINCT subject_id, hadm_id, icd9_code FROM diagnoses_icd "
                "WHERE hadm_id IS NOT NULL AND icd9_code IS NOT NULL ORDER BY hadm_id, icd9_code"):
            if code in titles:
                facts["dx"].append(Fact("dx", subj, hadm, code))
    finally:
        con.close()
    rec = Records(facts=facts, dx_titles=titles)
    for kind, items in facts.items():
        for f in items:
            rec.by_entity.setdefault((kind, f.hadm, f.entity), []).append(f)
            rec.present.setdefault((kind, f.hadm), set()).add(f.entity)
            rec.related.setdefault((kind, f.hadm), set()).add(related_key(kind, f.entity))
            rec.subject_of[f.hadm] = f.subject
            if f.date:
                rec.dates.setdefault(f.hadm, []).append(f.date)
                rec.kind_dates.setdefault((kind, f.hadm), []).append(f.date)
    for hadm, specs in all_specimens.items():  # cultures without growth exist too
        rec.related.setdefault(("micro", hadm), set()).update(related_key("micro", s)
                                                                 for s in specs)
        rec.present.setdefault(("micro", hadm), set()).update(specs)
    return rec


# --------------------------------------------------------------------------- checking


def same_value(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def same_dose(a: str, b: str) -> bool:
    def parts(s: str) -> list[float]:
        return [float(p) for p in s.split("-")]

    return parts(a) == parts(b)


def count_fields(m: Mention, rec: Records) -> int:
    """The fewest stated fields that disagree with one record of the entity (1: absent)."""
    if m.kind == "dx":
        return 0 if m.entity in rec.present.get(("dx", m.hadm), set()) else 1
    records = rec.by_entity.get((m.kind, m.hadm, m.entity), [])
    if not records:
        return 1
    best = 99
    for r in records:
        if m.kind == "lab":
            n = (not same_value(r.value, m.value)) + (r.date != m.date)
        elif m.kind == "med":
            n = ((not same_dose(r.value, m.value)) + (r.route != m.route)
                 + (r.date != m.date))
        else:
            n = (r.value != m.value) + (r.date != m.date)
        best = min(best, n)
    return best


def _far_from(value: float, others: Iterable[float]) -> bool:
    return all(abs(value - o) > REL_TOL * max(abs(o), abs(value), 1e-9) for o in others)


def _clear_of_relatives(m: Mention, rec: Records) -> bool:
    """An inconsistent drug or culture mention also matches no record of a related entity
    (same first word): a lenient reader would not call it consistent either."""
    if m.kind not in ("med", "micro"):
        return True
    key = related_key(m.kind, m.entity)
    for entity in rec.present.get((m.kind, m.hadm), set()):
        if entity == m.entity or related_key(m.kind, entity) != key:
            continue
        probe = Mention(**{**m.__dict__, "entity": entity})
        if count_fields(probe, rec) == 0:
            return False
    return True


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Draws the mentions of one split (see the module docstring)."""

    def __init__(self, rec: Records, hadms: set[int], rng: random.Random) -> None:
        self.rec, self.rng = rec, rng
        self.hadms = sorted(hadms)
        self.facts = {k: [f for f in v if f.hadm in hadms] for k, v in rec.facts.items()}
        self.used: set[tuple[str, int]] = set()
        self.of_entity: dict[tuple[str, str], list[int]] = defaultdict(list)
        for kind, items in self.facts.items():
            for i, f in enumerate(items):
                self.of_entity[(kind, f.entity)].append(i)
        self.unused_of_entity = {k: rng.sample(v, len(v)) for k, v in self.of_entity.items()}
        self.values: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for kind, items in self.facts.items():
            for f in items:
                self.values[(kind, f.entity if kind != "med" else f"{f.entity}|{f.unit}")
                            ].append(f.value)
        self.orgs = [f.value for f in self.facts["micro"]]
        self.routes: dict[str, list[str]] = defaultdict(list)  # a drug's routes (with repeats)
        for f in self.facts["med"]:
            self.routes[f.entity].append(f.route)
        self.entity_adms: dict[str, dict[str, set[int]]] = {k: defaultdict(set) for k in KIND_TITLES}
        for kind, items in self.facts.items():
            for f in items:
                self.entity_adms[kind][f.entity].add(f.hadm)
        self._counts: dict[tuple, int] = {}
        self._absent_cache: dict[tuple[str, str], list[int]] = {}
        self.spec_orgs: dict[str, list[str]] = defaultdict(list)  # organisms by specimen
        for f in self.facts["micro"]:
            self.spec_orgs[f.entity].append(f.value)
        # unused records by (category, kind): only those the category can change
        self.unused: dict[tuple[str, str], list[int]] = {}
        for category, kinds in KIND_WEIGHTS.items():
            for kind in kinds:
                pool = list(range(len(self.facts[kind])))
                if category != "existence":
                    pool = [i for i in pool if self._eligible(self.facts[kind][i], category)]
                rng.shuffle(pool)
                self.unused[(category, kind)] = pool

    def _take(self, kind: str, category: str = "", entity: str | None = None) -> Fact | None:
        """An unused record (of ``entity``), marked used: a record is mentioned once."""
        pool = (self.unused[(category, kind)] if entity is None
                else self.unused_of_entity.get((kind, entity), []))
        while pool:
            i = pool.pop()
            if (kind, i) not in self.used:
                self.used.add((kind, i))
                return self.facts[kind][i]
        return None

    def draw(self, category: str, inconsistent: bool) -> Mention | None:
        for _ in range(30):
            weights = {k: w for k, w in KIND_WEIGHTS[category].items()
                       if self.unused[(category, k)]}
            if not weights:
                return None
            kind = self.rng.choices(list(weights), list(weights.values()))[0]
            m = (self._existence(kind, inconsistent) if category == "existence"
                 else self._changed(kind, category, inconsistent))
            if m is not None:
                return m
        return None

    # -- numeric and string ---------------------------------------------------------------
    def _eligible(self, f: Fact, category: str) -> bool:
        """Whether the record could be changed the ways its category allows; decided
        before the label is looked at, so that no kind of record is consistent only."""
        if self._distinct(("dates", f.hadm), self.rec.dates.get(f.hadm, ())) < 2:
            return False
        if category == "numeric" and f.kind == "med":
            key = ("med", f"{f.entity}|{f.unit}")
            return self._distinct(key, self.values[key]) >= 2
        if category == "numeric" and f.kind == "lab":
            return self._distinct(("lab", f.entity), self.values[("lab", f.entity)]) >= 2
        if category == "string" and f.kind == "med":
            return self._distinct(("routes", f.entity), self.routes[f.entity]) >= 2
        return True

    def _distinct(self, key: tuple, items: Iterable[Any]) -> int:
        if key not in self._counts:
            self._counts[key] = len(set(items))
        return self._counts[key]

    def _changed(self, kind: str, category: str, inconsistent: bool) -> Mention | None:
        f = self._take(kind, category)
        if f is None:
            return None
        m = Mention(kind, category, f.subject, f.hadm, f.entity, f.date, f.value, f.unit, f.route)
        rng = self.rng
        if category == "string":
            # the shown route (organism) is another record's, which differs from this one's
            # with probability 1 - p(this one); a consistent mention is kept with that same
            # probability, so both labels show routes (organisms) equally often
            pool = self.routes[f.entity] if kind == "med" else self.spec_orgs[f.entity]
            mine = f.route if kind == "med" else f.value
            if not inconsistent and rng.random() < pool.count(mine) / len(pool):
                return None
        if not inconsistent:
            return m
        if category == "numeric":
            if kind == "lab":
                what = rng.choices([("value",), ("date",), ("value", "date")], [2, 1, 1])[0]
            elif kind == "med":
                what = rng.choices([("dose",), ("date",), ("dose", "date")], [2, 1, 1])[0]
            else:
                what = ("date",)
        else:
            field_name = "route" if kind == "med" else "organism"
            what = rng.choices([(field_name,), (field_name, "date")], [4, 1])[0]
        for part in what:
            if not self._change(m, part):
                return None
        m.inconsistent, m.changed = True, what
        m.n_fields = count_fields(m, self.rec)
        if m.n_fields == 0 or self._near_match(m) or not _clear_of_relatives(m, self.rec):
            return None
        return m

    def _near_match(self, m: Mention) -> bool:
        """A lab value within 1 % of a record of that day (a lenient reader's match)."""
        return m.kind == "lab" and not _far_from(m.value, [r.value for r in self._same_day(m)])

    def _same_day(self, m: Mention) -> list[Fact]:
        return [r for r in self.rec.by_entity.get((m.kind, m.hadm, m.entity), [])
                if r.date == m.date]

    def _change(self, m: Mention, part: str) -> bool:
        rng = self.rng
        if part == "value":
            pool = self.values[("lab", m.entity)]
            for _ in range(30):
                v = rng.choice(pool)
                if _far_from(v, [r.value for r in self._same_day(m)] + [m.value]):
                    m.value = v
                    return True
            return False
        if part == "dose":
            pool = self.values[("med", f"{m.entity}|{m.unit}")]
            for _ in range(30):
                d = rng.choice(pool)
                if all(not same_dose(d, r.value) for r in self._same_day(m)) \
                        and not same_dose(d, m.value):
                    m.value = d
                    return True
            return False
        if part == "date":
            dates = self.rec.dates.get(m.hadm, [])
            for _ in range(30):
                d = rng.choice(dates)
                if d != m.date:
                    m.date = d
                    return True
            return False
        if part == "route":
            r = rng.choice(self.routes[m.entity])  # another record's route (one draw)
            if r != m.route and all(x.route != r for x in self._same_day(m)):
                m.route = r
                return True
            return False
        if part == "organism":
            here = {r.value for r in self._same_day(m)} | {m.value}
            genera = {o.split()[0] for o in here if o.split()}
            o = rng.choice(self.spec_orgs[m.entity])  # another culture's organism (one draw)
            if o not in here and o.split() and o.split()[0] not in genera:
                m.value = o
                return True
            return False
        raise ValueError(part)

    # -- existence ------------------------------------------------------------------------
    def _absent(self, kind: str, entity: str) -> list[int]:
        """The split's admissions without ``entity`` or a related entity."""
        key = (kind, entity)
        if key not in self._absent_cache:
            rel = related_key(kind, entity)
            self._absent_cache[key] = [
                h for h in self.hadms if h in self.rec.dates
                and rel not in self.rec.related.get((kind, h), set())]
        return self._absent_cache[key]

    def _existence(self, kind: str, inconsistent: bool) -> Mention | None:
        rng = self.rng
        entities = self.entity_adms[kind]
        # entities that can be shown either way: an unused record, and an admission
        # without it (nor a related entity); drawn before the label
        names = [e for e in sorted(entities) if self._absent(kind, e)
                 and self.unused_of_entity.get((kind, e))]
        if not names:
            return None
        entity = rng.choices(names, [len(entities[e]) for e in names])[0]
        if not inconsistent:
            f = self._take(kind, entity=entity)
            if f is None or (kind == "dx" and not dx_titles(self.rec, entity, f.hadm, False)):
                return None
            return Mention(kind, "existence", f.subject, f.hadm, f.entity, f.date, f.value,
                           f.unit, f.route)
        hadm = rng.choice(self._absent(kind, entity))
        donor = self.facts[kind][rng.choice(self.of_entity[(kind, entity)])]
        # a date of the same kind of record in that admission (else any of its dates)
        dates = self.rec.kind_dates.get((kind, hadm)) or self.rec.dates[hadm]
        date = rng.choice(dates) if kind != "dx" else ""
        m = Mention(kind, "existence", self.rec.subject_of[hadm], hadm, entity, date,
                    donor.value, donor.unit, donor.route, inconsistent=True,
                    changed=("entity",))
        m.n_fields = count_fields(m, self.rec)
        if kind == "dx" and not dx_titles(self.rec, entity, hadm, True):
            return None
        return m if m.n_fields == 1 else None


def split_subjects(rec: Records, seed: int, test_share: float) -> dict[str, set[int]]:
    """Admissions by split: patients (not admissions) are split, at random by seed."""
    subjects = sorted(set(rec.subject_of.values()))
    random.Random(f"ehrcon-split-{seed}").shuffle(subjects)
    n_test = max(1, round(len(subjects) * test_share))
    test = set(subjects[:n_test])
    out: dict[str, set[int]] = {"train": set(), "test": set()}
    for hadm, subj in rec.subject_of.items():
        out["test" if subj in test else "train"].add(hadm)
    return out


def draw_mentions(rec: Records, hadms: set[int], n: int, rng: random.Random) -> list[Mention]:
    """``n`` mentions (fewer when the split runs out of records), labels balanced within
    each category."""
    sampler = Sampler(rec, hadms, rng)
    plan: list[tuple[str, bool]] = []
    counts = {c: round(n * s) for c, s in CATEGORY_SHARE.items()}
    counts["numeric"] += n - sum(counts.values())
    for c, k in counts.items():
        plan += [(c, i % 2 == 1) for i in range(k)]
    rng.shuffle(plan)
    out = [m for c, label in plan if (m := sampler.draw(c, label)) is not None]
    out = _balance(out, sampler)
    # a category the database cannot fill: the others make up the difference, in pairs
    open_ = {c: 0 for c in CATEGORIES if counts[c]}  # category -> failed pairs in a row
    while len(out) + 2 <= n and open_:
        c = rng.choices(list(open_), [CATEGORY_SHARE[x] for x in open_])[0]
        pair = [sampler.draw(c, False), sampler.draw(c, True)]
        if None in pair:
            out += [m for m in pair if m is not None]
            out = _balance(out, sampler)
            open_[c] += 1
            if open_[c] >= 5:
                del open_[c]
            continue
        open_[c] = 0
        out += pair
    if len(out) == n - 1:  # an odd size: one more, of the rarer label
        pos = sum(m.inconsistent for m in out)
        if (m := sampler.draw("numeric", pos < len(out) - pos)) is not None:
            out.append(m)
    return out


def _balance(out: list[Mention], sampler: Sampler) -> list[Mention]:
    """Each category's labels even (to one): the rarer label drawn again where a draw
    failed, the other trimmed where that fails too."""
    for c in CATEGORIES:
        for _ in range(500):
            pos = sum(1 for m in out if m.category == c and m.inconsistent)
            neg = sum(1 for m in out if m.category == c and not m.inconsistent)
            if abs(pos - neg) <= 1:
                break
            m = sampler.draw(c, pos < neg)
            if m is None:
                k = min(pos, neg)
                drop = [id(m) for m in out if m.category == c and m.inconsistent == (pos > neg)][k:]
                out = [m for m in out if id(m) not in set(drop)]
                break
            out.append(m)
    return out


# --------------------------------------------------------------------------- rendering


def fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.10g}"


def _date(day: str, rng: random.Random) -> str:
    d = dt.date.fromisoformat(day)
    return d.strftime(rng.choice(DATE_FORMATS))


def _case(text: str, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return text
    if style == 1:
        return text[:1].upper() + text[1:]
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _genus_species(org: str, all_orgs: set[str]) -> str | None:
    words = org.split()
    if len(words) == 2 and all(w.isalpha() for w in words):
        short = f"{words[0][0]}. {words[1]}"
        clash = [o for o in all_orgs if o != org and len(o.split()) == 2
                 and o.split()[0][:1] == words[0][:1] and o.split()[1] == words[1]]
        if not clash:
            return words[0][:1].upper() + short[1:]
    return None


class Renderer:
    """Writes mentions as note lines (entity names with abbreviations and synonyms)."""

    def __init__(self, rec: Records) -> None:
        self.rec = rec
        labels = {f.entity for f in rec.facts["lab"]}
        drugs = {f.entity for f in rec.facts["med"]}
        # an abbreviation is used only when it names no other entity of the table
        self.lab_names = {k: v for k, v in LAB_ABBREVIATIONS.items()
                          if not any(a.lower() in labels for a in v if a.lower() != k)}
        self.drug_names = {k: v for k, v in DRUG_ABBREVIATIONS.items()
                           if not any(a.lower() in drugs for a in v if a.lower() != k)
                           and not any(d != k and d.startswith(k) for d in drugs)}
        self.orgs = {f.value for f in rec.facts["micro"]}

    def name(self, m: Mention, rng: random.Random) -> str | None:
        """The entity as written (None: no title tells this diagnosis apart)."""
        if m.kind == "lab":
            alts = self.lab_names.get(m.entity, ())
            return rng.choice(alts) if alts and rng.random() < 0.6 else _case(m.entity, rng)
        if m.kind == "med":
            alts = self.drug_names.get(m.entity, ())
            return rng.choice(alts) if alts and rng.random() < 0.5 else _case(m.entity, rng)
        if m.kind == "micro":
            alts = SPECIMEN_NAMES.get(m.entity)
            if alts:
                return rng.choice(alts)
            text = m.entity if "culture" in m.entity else f"{m.entity} culture"
            return _case(text, rng)
        ok = dx_titles(self.rec, m.entity, m.hadm, m.inconsistent)[::-1]  # long title first
        if not ok:
            return None
        return _case(ok[0] if len(ok) == 1 or rng.random() < 0.7 else ok[1], rng)

    def organism(self, org: str, rng: random.Random) -> str:
        alts = list(ORGANISM_NAMES.get(org, ()))
        gs = _genus_species(org, self.orgs)
        if gs:
            alts.append(gs)
        return rng.choice(alts) if alts and rng.random() < 0.5 else _case(org, rng)

    def line(self, m: Mention, name: str, rng: random.Random) -> tuple[str, str]:
        """(the line, the entity as written in it: capitalised when it starts the line)."""
        t = rng.choice(TEMPLATES[m.kind])
        if t.startswith(("{n}", "{s}", "{t}")):
            name = name[:1].upper() + name[1:]
        if m.kind == "lab":
            text = t.format(n=name, v=fmt_number(m.value), u=f" {m.unit}" if m.unit else "",
                            d=_date(m.date, rng))
        elif m.kind == "med":
            text = t.format(n=name, q=m.value, u=m.unit, r=rng.choice(ROUTE_PHRASES[m.route]),
                            d=_date(m.date, rng))
        elif m.kind == "micro":
            text = t.format(s=name, o=self.organism(m.value, rng), d=_date(m.date, rng))
        else:
            text = t.format(t=name)
        return " ".join(text.split()), name


@dataclass
class NoteLine:
    """A task's address in a note and what the line holds."""

    note_id: str
    line: int  # 1-based
    entity: str  # as written
    text: str
    mention: Mention


def render_notes(mentions: list[Mention], rec: Records, rng: random.Random, *,
                 prefix: str = "N") -> tuple[dict[str, str], list[NoteLine]]:
    """Notes (id -> text) holding the mentions, 5-12 mentions a note, one admission each."""
    renderer = Renderer(rec)
    by_hadm: dict[int, list[Mention]] = defaultdict(list)
    for m in mentions:
        by_hadm[m.hadm].append(m)
    chunks: list[list[Mention]] = []
    for hadm in sorted(by_hadm):
        items = by_hadm[hadm]
        rng.shuffle(items)
        while items:
            k = rng.randint(5, 12)
            chunks.append(items[:k])
            items = items[k:]
    rng.shuffle(chunks)
    notes: dict[str, str] = {}
    lines_out: list[NoteLine] = []
    for i, chunk in enumerate(chunks):
        note_id = f"{prefix}{i:05d}"
        hadm = chunk[0].hadm
        lines = [f"{rng.choice(NOTE_TYPES)} {note_id}",
                 f"Patient subject_id {chunk[0].subject}, admission hadm_id {hadm}.", ""]
        for kind in ("lab", "med", "micro", "dx"):
            here = [m for m in chunk if m.kind == kind]
            if not here:
                continue
            lines.append(rng.choice(SECTION_HEADERS[kind]))
            for m in here:
                if rng.random() < 0.15:
                    lines.append(rng.choice(FILLER))
                name = renderer.name(m, rng)
                if name is None:
                    continue
                text, name = renderer.line(m, name, rng)
                lines.append(text)
                lines_out.append(NoteLine(note_id, len(lines), name, text, m))
            lines.append("")
        notes[note_id] = "\n".join(lines) + "\n"
    return notes, lines_out
