"""MIMIC-IV (EHRSQL-2024 schema): the synthetic generator and the demo importer's rules."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest

from medagentgym.data import databases, schema
from medagentgym.data.importers_mimic_iv import CURRENT_TIME, import_mimic_iv
from medagentgym.data.synth.mimic_iv import NOW, build_mimic_iv
from medagentgym.errors import ConfigurationError

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
DEMO = MIRROR / "mimic_iv_demo"
needs_demo = pytest.mark.skipif(not (DEMO / "hosp").is_dir(),
                                reason=f"MIMIC-IV demo not in the mirror ({DEMO})")


def _dump(path: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"select * from {t} order by row_id").fetchall()
                for t in schema.table_names("mimic_iv")}
    finally:
        con.close()


def test_registered_database_and_schema():
    spec = databases.get_database("mimic-iv")
    assert spec.schema == "mimic_iv" and spec.importer and spec.synthetic
    assert "mimic_iv" in schema.SCHEMA_NAMES
    assert schema.columns("mimic_iv", "inputevents")[-2:] == ["totalamount", "totalamountuom"]
    assert "icd_code" in schema.columns("mimic_iv", "diagnoses_icd")


def test_synthetic_is_deterministic_and_conforms(tmp_path):
    a = build_mimic_iv(tmp_path / "a.sqlite", patients=25, seed=3)
    b = build_mimic_iv(tmp_path / "b.sqlite", patients=25, seed=3)
    c = build_mimic_iv(tmp_path / "c.sqlite", patients=25, seed=4)
    da, db, dc = _dump(a), _dump(b), _dump(c)
    assert da == db
    assert da != dc
    con = sqlite3.connect(a)
    assert schema.check_schema(con, "mimic_iv") == []
    for table, col in (("admissions", "admittime"), ("labevents", "charttime"),
                       ("prescriptions", "starttime"), ("chartevents", "charttime")):
        lo, hi = con.execute(f"select min({col}), max({col}) from {table}").fetchone()
        assert lo >= "2100-01-01" and hi <= NOW, (table, lo, hi)
    assert con.execute("select count(distinct subject_id) from patients").fetchone()[0] == 25
    # every event refers to an admission; cost rows point at their events
    orphans = con.execute("select count(*) from labevents where hadm_id not in "
                          "(select hadm_id from admissions)").fetchone()[0]
    assert orphans == 0
    bad_cost = con.execute(
        "select count(*) from cost c where c.event_type = 'prescriptions' and not exists "
        "(select 1 from prescriptions p where p.row_id = c.event_id and "
        "p.hadm_id = c.hadm_id)").fetchone()[0]
    assert bad_cost == 0


def test_import_refuses_a_folder_that_is_not_the_demo(tmp_path):
    with pytest.raises(ConfigurationError, match="is not the MIMIC-IV demo"):
        import_mimic_iv(tmp_path, tmp_path / "x.sqlite")
    with pytest.raises(ConfigurationError, match="no --seed"):
        import_mimic_iv(tmp_path, tmp_path / "x.sqlite", seed=1)


@pytest.fixture(scope="module")
def demo_with_chartevents(tmp_path_factory) -> Path:
    """The demo with a small stand-in ``icu/chartevents.csv.gz`` (the mirror lacks it)."""
    if not (DEMO / "hosp").is_dir():
        pytest.skip(f"MIMIC-IV demo not in the mirror ({DEMO})")
    root = tmp_path_factory.mktemp("demo")
    for sub in ("hosp", "icu"):
        (root / sub).mkdir()
        for f in (DEMO / sub).iterdir():
            (root / sub / f.name).symlink_to(f)
    # an ICU stay of the demo: patient 10005817, hadm 20626031, stay 32604416 (2132-12-15 ...)
    rows = [
        "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,"
        "valueuom,warning",
        "10005817,20626031,32604416,1,2132-12-16 20:00:00,,220045,88,88,bpm,0",
        "10005817,20626031,32604416,1,2132-12-16 21:00:00,,220045,,,bpm,0",  # no value
        "10005817,20626031,32604416,1,2132-12-16 20:00:00,,220179,120,120,mmHg,0",  # not kept
        "10005817,20626031,32604416,1,2139-01-01 00:00:00,,220045,90,90,bpm,0",  # after now
    ]
    with gzip.open(root / "icu" / "chartevents.csv.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    return root


@needs_demo
@pytest.mark.slow
def test_import_demo_rules(tmp_path, demo_with_chartevents):
    report = import_mimic_iv(demo_with_chartevents, tmp_path / "m.sqlite")
    assert report.missing_tables == []
    con = sqlite3.connect(report.path)
    assert schema.check_schema(con, "mimic_iv") == []
    tables = report.tables
    assert 80 <= tables["patients"] <= 100 and tables["cost"] == sum(
        tables[t] for t in ("diagnoses_icd", "labevents", "procedures_icd", "prescriptions"))
    # every patient's first admission falls in 2100; nothing after the current time
    firsts = con.execute("select min(admittime) from admissions group by subject_id").fetchall()
    assert all(f[0].startswith("2100-") for f in firsts)
    for table, col in (("admissions", "dischtime"), ("labevents", "charttime"),
                       ("prescriptions", "starttime"), ("transfers", "intime"),
                       ("microbiologyevents", "charttime"), ("chartevents", "charttime")):
        lo, hi = con.execute(f"select min({col}), max({col}) from {table}").fetchone()
        assert lo >= "2100-01-01" and hi <= CURRENT_TIME, (table, lo, hi)
    # still in hospital: no discharge time and no discharge location
    assert con.execute("select count(*) from admissions where dischtime is null and "
                       "discharge_location is not null").fetchone()[0] == 0
    assert con.execute("select count(*) from admissions where dischtime is null"
                       ).fetchone()[0] >= 1
    # values as EHRSQL-2024 stored them
    assert con.execute("select count(*) from prescriptions where dose_val_rx not like '%.0'"
                       ).fetchone()[0] == 0
    assert con.execute("select count(*) from diagnoses_icd where icd_code not like 'icd9|%' "
                       "and icd_code not like 'icd10|%'").fetchone()[0] == 0
    assert con.execute("select count(*) from inputevents where totalamountuom != 'ml'"
                       ).fetchone()[0] == 0
    # labels kept in one table only: 'vasopressin' is an ICU input, not a prescription
    assert con.execute("select count(*) from prescriptions where drug = 'vasopressin'"
                       ).fetchone()[0] == 0
    # the stand-in chartevents: the one heart-rate value kept, shifted like the patient
    ch = con.execute("select subject_id, itemid, valuenum, charttime from chartevents").fetchall()
    shift = con.execute("select min(admittime) from admissions where subject_id = 10005817"
                        ).fetchone()[0]
    assert [(r[0], r[1], r[2]) for r in ch] == [(10005817, 220045, 88.0)]
    assert ch[0][3][:4] == "2100" and shift[:4] == "2100"
    # ages are whole years at admission, as in EHRSQL-2024
    assert con.execute("select min(age), max(age) from admissions").fetchone()[0] >= 18
