"""EHRCon's reference checker: re-reads a note line and queries the tables (standard library
only: its source is the oracle's code and runs inside the sandbox, where medagentgym is not
importable).

It is deliberately independent of the generator (``ehrcon_notes``): its own reading of the
line (the section it sits in, dates in four written forms, the first number, route phrases,
organism names and abbreviations) and its own name tables; it never sees the label. The test
suite holds it to 100 % agreement with the generated labels and field counts.
"""

import datetime
import re
import sqlite3

LAB_ALIASES = {
    "k": "potassium", "k+": "potassium", "na": "sodium", "cl": "chloride",
    "hco3": "bicarbonate", "bicarb": "bicarbonate", "bg": "glucose", "cr": "creatinine",
    "creat": "creatinine", "bun": "urea nitrogen", "hgb": "hemoglobin", "hb": "hemoglobin",
    "hct": "hematocrit", "wbc": "white blood cells", "white count": "white blood cells",
    "plt": "platelet count", "platelets": "platelet count", "mg": "magnesium",
    "phos": "phosphate", "ca": "calcium, total", "total calcium": "calcium, total",
    "ag": "anion gap", "lactic acid": "lactate", "inr": "inr(pt)",
    "alt": "alanine aminotransferase (alt)", "sgpt": "alanine aminotransferase (alt)",
    "ast": "asparate aminotransferase (ast)", "sgot": "asparate aminotransferase (ast)",
    "t bili": "bilirubin, total", "total bilirubin": "bilirubin, total",
    "alk phos": "alkaline phosphatase", "ldh": "lactate dehydrogenase (ld)",
    "ica": "free calcium", "ionized calcium": "free calcium", "rbc": "red blood cells",
    "tnt": "troponin t", "ck": "creatine kinase (ck)", "cpk": "creatine kinase (ck)",
    "alb": "albumin",
}
DRUG_ALIASES = {
    "apap": "acetaminophen", "tylenol": "acetaminophen", "asa": "aspirin", "vanc": "vancomycin",
    "kcl": "potassium chloride", "lasix": "furosemide", "colace": "docusate sodium",
    "protonix": "pantoprazole", "lopressor": "metoprolol tartrate",
    "mag sulfate": "magnesium sulfate",
}
SPECIMEN_ALIASES = {"bcx": "blood culture", "blood cx": "blood culture", "ucx": "urine",
                    "urine cx": "urine", "urine culture": "urine", "sputum cx": "sputum",
                    "sputum culture": "sputum"}
ORGANISM_ALIASES = {"coag-positive staph aureus": "staph aureus coag +",
                    "coag-negative staph": "staphylococcus, coagulase negative",
                    "cons": "staphylococcus, coagulase negative"}
# written route -> family; database route -> family
ROUTE_WORDS = {
    "iv": "iv", "intravenously": "iv", "po": "oral", "by mouth": "oral", "orally": "oral",
    "via ng tube": "tube", "per feeding tube": "tube", "sc": "subq", "subcutaneously": "subq",
    "inhaled": "inh", "by nebulizer": "inh", "pr": "rectal", "per rectum": "rectal",
    "topically": "topical", "transdermally": "patch", "to the eyes": "eye",
    "ophthalmically": "eye", "im": "im", "intramuscularly": "im", "sl": "sl",
    "sublingually": "sl", "intrathecally": "it",
}
DB_ROUTES = {
    "iv": "iv", "iv bolus": "iv", "iv drip": "iv", "ivpca": "iv", "ivs": "iv", "po": "oral",
    "oral": "oral", "ng": "tube", "og": "tube", "po/ng": "tube", "sc": "subq", "subcut": "subq",
    "ih": "inh", "pr": "rectal", "tp": "topical", "td": "patch", "both eyes": "eye",
    "ou": "eye", "od": "eye", "os": "eye", "right eye": "eye", "left eye": "eye", "im": "im",
    "sl": "sl", "it": "it",
}
SECTIONS = (("lab", ("laboratory", "labs", "results")), ("med", ("medication", "meds")),
            ("micro", ("microbiology", "micro", "cultures")),
            ("dx", ("assessment", "problem", "diagnoses")))
MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec"))}
DATES = (
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), lambda g: (g[2], g[0], g[1])),
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), lambda g: (g[0], g[1], g[2])),
    (re.compile(r"\b([A-Z][a-z]{2}) (\d{1,2}), (\d{4})\b"), lambda g: (g[2], g[0], g[1])),
    (re.compile(r"\b(\d{1,2}) ([A-Z][a-z]{2}) (\d{4})\b"), lambda g: (g[2], g[1], g[0])),
)


def _norm(text):
    return " ".join(str(text).lower().split())


def _find(needle, hay, flags=0):
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(needle) + r"(?![A-Za-z0-9])", hay, flags)


def _cut(text, match):
    return text[:match.start()] + " " + text[match.end():]


def _date(text):
    """(ISO date, the text without it) for the first written date."""
    for pattern, order in DATES:
        m = pattern.search(text)
        if m:
            y, mo, d = order(m.groups())
            mo = MONTHS[mo.lower()] if not str(mo).isdigit() else int(mo)
            return datetime.date(int(y), mo, int(d)).isoformat(), _cut(text, m)
    return None, text


def _section(lines, index):
    for i in range(index - 1, -1, -1):
        head = lines[i].strip().lower()
        if head.endswith(":"):
            for kind, words in SECTIONS:
                if any(w in head for w in words):
                    return kind
    return None


def _dose_parts(text):
    return [float(p) for p in text.split("-")]


def ehrcon_check(note_path, line_no, entity, db_path):
    """``{"inconsistent": bool, "n_fields": int}`` for the mention of ``entity`` on line
    ``line_no`` (1-based) of the note."""
    with open(note_path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    text = lines[line_no - 1]
    hadm = int(re.search(r"hadm_id (\d+)", "\n".join(lines[:3])).group(1))
    kind = _section(lines, line_no - 1)
    found = _find(entity, text)
    rest = _cut(text, found)
    day, rest = _date(rest)
    name = _norm(entity)
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        if kind == "lab":
            n = _lab(con, hadm, name, day, rest)
        elif kind == "med":
            n = _med(con, hadm, name, day, rest)
        elif kind == "micro":
            n = _micro(con, hadm, name, day, rest)
        else:
            n = _dx(con, hadm, name)
    finally:
        con.close()
    return {"inconsistent": n > 0, "n_fields": n}


def _lab(con, hadm, name, day, rest):
    labels = {_norm(r[0]) for r in con.execute("SELECT DISTINCT label FROM d_labitems")}
    label = name if name in labels else LAB_ALIASES[name]
    value = float(re.search(r"(?<![\w.])-?\d+(?:\.\d+)?", rest).group(0))
    rows = [(v, str(t)[:10]) for v, t, lab in con.execute(
        "SELECT l.valuenum, l.charttime, d.label FROM labevents l JOIN d_labitems d "
        "ON d.itemid = l.itemid WHERE l.hadm_id = ? AND l.valuenum IS NOT NULL", (hadm,))
        if _norm(lab) == label]
    if not rows:
        return 1
    return min((abs(v - value) > 1e-9 * max(1.0, abs(v), abs(value))) + (t != day)
               for v, t in rows)


def _med(con, hadm, name, day, rest):
    drugs = {_norm(r[0]) for r in con.execute(
        "SELECT DISTINCT drug FROM prescriptions WHERE drug IS NOT NULL")}
    drug = name if name in drugs else DRUG_ALIASES[name]
    dose = re.search(r"\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?", rest)
    rest = _cut(rest, dose)
    route = None
    for phrase in sorted(ROUTE_WORDS, key=len, reverse=True):
        if _find(phrase, rest, re.I):
            route = ROUTE_WORDS[phrase]
            break
    rows = [(d, r, str(t)[:10]) for d, r, t, g in con.execute(
        "SELECT trim(dose_val_rx), lower(trim(route)), startdate, drug FROM prescriptions "
        "WHERE hadm_id = ? AND dose_val_rx IS NOT NULL", (hadm,)) if _norm(g) == drug]
    rows = [(d, r, t) for d, r, t in rows if re.fullmatch(r"[\d.]+(-[\d.]+)?", d)]
    if not rows:
        return 1
    want = _dose_parts(dose.group(0))
    return min((_dose_parts(d) != want) + (DB_ROUTES.get(r) != route) + (t != day)
               for d, r, t in rows)


def _micro(con, hadm, name, day, rest):
    specs = {_norm(r[0]) for r in con.execute(
        "SELECT DISTINCT spec_type_desc FROM microbiologyevents WHERE spec_type_desc IS NOT NULL")}
    spec = name if name in specs else SPECIMEN_ALIASES.get(name)
    if spec is None:
        spec = re.sub(r" (culture|cx)$", "", name)
    orgs = {_norm(r[0]) for r in con.execute(
        "SELECT DISTINCT org_name FROM microbiologyevents WHERE org_name IS NOT NULL")}
    low = _norm(rest)
    candidates = [o for o in orgs if _find(o, low)]
    candidates += [o for a, o in ORGANISM_ALIASES.items() if _find(a, low)]
    for initial, species in re.findall(r"\b([A-Z])\. ([a-z]+)\b", rest):
        candidates += [o for o in orgs if len(o.split()) == 2 and o[0] == initial.lower()
                       and o.split()[1] == species]
    org = max(candidates, key=len)
    rows = [(_norm(o), str(t)[:10]) for s, o, t in con.execute(
        "SELECT spec_type_desc, org_name, charttime FROM microbiologyevents "
        "WHERE hadm_id = ? AND org_name IS NOT NULL", (hadm,)) if _norm(s) == spec]
    if not rows:
        return 1
    return min((o != org) + (t != day) for o, t in rows)


def _dx(con, hadm, name):
    codes = {c for c, s, lt in con.execute(
        "SELECT icd9_code, short_title, long_title FROM d_icd_diagnoses")
        if name in (_norm(s), _norm(lt))}
    coded = {r[0] for r in con.execute(
        "SELECT icd9_code FROM diagnoses_icd WHERE hadm_id = ?", (hadm,))}
    return 0 if codes & coded else 1
