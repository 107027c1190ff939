"""Importers: the real open demos (MIMIC-III, eICU) from the shared mirror into EHRSQL's schema,
TREQS from MIMIC-III, the MedAgentGym release registration, atomicity and streaming inputs."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from medagentgym.data import home, importers, schema
from medagentgym.errors import ConfigurationError

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
MIMIC_DEMO = MIRROR / "mimic_iii_demo"
EICU_DEMO = MIRROR / "eicu_demo"
pytestmark = pytest.mark.skipif(
    not (MIMIC_DEMO.is_dir() and EICU_DEMO.is_dir()), reason="shared data mirror not available"
)


def _manifest_rows() -> dict[str, int]:
    rows = {}
    for line in (MIRROR / "MANIFEST.tsv").read_text().splitlines()[1:]:
        parts = line.split("\t")
        if parts[2].isdigit():
            rows[parts[0]] = int(parts[2])
    return rows


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    out = tmp_path_factory.mktemp("mimic") / "db" / "mimic_iii.sqlite"
    stages = []
    report = importers.import_mimic_iii(
        MIMIC_DEMO, out, progress=lambda stage, done, total: stages.append(stage)
    )
    return report, stages


@pytest.fixture(scope="module")
def eicu(tmp_path_factory):
    out = tmp_path_factory.mktemp("eicu") / "eicu.sqlite"
    return importers.import_eicu(EICU_DEMO, out)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


_PLACEHOLDER = re.compile(r"\b\w+_(lower|upper)\b")


def _gold_queries(db: str) -> list[str]:
    data = json.loads(
        gzip.decompress((MIRROR / f"ehrsql/v2024-04-27/{db}/valid.json.gz").read_bytes())
    )
    out = []
    for item in data:
        q = item["query"]
        if q in ("nan", "null", "") or _PLACEHOLDER.search(q):  # unanswerable / unfilled template
            continue
        out.append(q.replace("current_time", f"'{importers.CURRENT_TIME}'"))
    return out


def _time_columns(name: str) -> dict[str, list[str]]:
    return {
        t: [c for c, typ in cols if typ.startswith("TIMESTAMP")]
        for t, cols in schema.SCHEMAS[name].items()
    }


# --------------------------------------------------------------------------- MIMIC-III


def test_mimic_demo_inputs_match_mirror_manifest(mimic):
    report, stages = mimic
    rows = _manifest_rows()
    read = {Path(i["path"]).name: i for i in report.inputs}
    assert len(read) == 16  # every source table (cost is derived)
    for name, rec in read.items():
        assert rec["rows_read"] == rows[f"mimic_iii_demo/{name}"], name
        assert rec["sha256"] and len(rec["sha256"]) == 64
    assert report.missing_tables == []
    assert "chartevents" in stages and "cost" in stages


def test_mimic_demo_schema_counts_and_manifest(mimic):
    report, _ = mimic
    with _connect(report.path) as conn:
        assert schema.check_schema(conn, "mimic_iii") == []
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in report.tables}
    assert counts == report.tables and set(counts) == set(schema.table_names("mimic_iii"))
    assert counts["patients"] == 100  # every demo patient has an admission in range
    assert 100 < counts["admissions"] <= 129
    assert counts["d_icd_diagnoses"] == 14567 and counts["d_labitems"] == 753
    assert 0 < counts["chartevents"] < 758355 and 0 < counts["labevents"] < 76074
    assert counts["cost"] == sum(
        counts[t] for t in ("diagnoses_icd", "procedures_icd", "labevents", "prescriptions")
    )
    man = home.read_manifest(report.path)
    assert man["kind"] == "database" and man["schema"] == "mimic_iii"
    assert man["tables"] == counts and man["sha256"] == home.sha256_file(report.path)
    assert man["parameters"]["current_time"] == "2105-12-31 23:59:00"
    assert any("cost is synthesised" in n for n in man["notes"])
    assert home.is_finished(report.path)


def test_mimic_demo_values_follow_ehrsql_conventions(mimic):
    report, _ = mimic
    with _connect(report.path) as conn:
        for table, cols in _time_columns("mimic_iii").items():
            for col in cols:
                hi = conn.execute(f"SELECT max({col}) FROM {table}").fetchone()[0]
                if hi is not None:
                    assert hi <= importers.CURRENT_TIME, (table, col)
                if table not in ("patients",):
                    lo = conn.execute(f"SELECT min({col}) FROM {table}").fetchone()[0]
                    assert lo is None or lo >= "2100-01-01", (table, col, lo)
        # the latest data sits close to the "current time"
        assert conn.execute("SELECT max(admittime) FROM admissions").fetchone()[0] >= "2105"
        for table, col in (
            ("d_labitems", "label"),
            ("d_items", "label"),
            ("prescriptions", "drug"),
            ("admissions", "ethnicity"),
            ("d_icd_diagnoses", "short_title"),
        ):
            upper = conn.execute(
                f"SELECT count(*) FROM {table} WHERE {col} <> lower({col})"
            ).fetchone()[0]
            assert upper == 0, (table, col)
        assert conn.execute("SELECT DISTINCT gender FROM patients ORDER BY 1").fetchall() == [
            ("f",),
            ("m",),
        ]
        ages = conn.execute("SELECT min(age), max(age) FROM admissions").fetchone()
        assert ages[0] >= 0 and ages[1] >= 89
        # diagnoses are charted at admission, procedures at discharge
        bad = conn.execute(
            """SELECT count(*) FROM diagnoses_icd d JOIN admissions a USING (hadm_id)
               WHERE d.charttime <> a.admittime"""
        ).fetchone()[0]
        assert bad == 0
        # one unit per drug; integer doses only
        assert (
            conn.execute(
                "SELECT count(*) FROM (SELECT drug FROM prescriptions GROUP BY drug "
                "HAVING count(DISTINCT dose_unit_rx) > 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM prescriptions WHERE dose_val_rx GLOB '*[^0-9]*'"
            ).fetchone()[0]
            == 0
        )
        # each item has one price; event ids point at their rows
        assert (
            conn.execute(
                """SELECT count(*) FROM (SELECT d.icd9_code FROM cost c
                   JOIN diagnoses_icd d ON c.event_type = 'diagnoses_icd' AND d.row_id = c.event_id
                   GROUP BY d.icd9_code HAVING count(DISTINCT c.cost) > 1)"""
            ).fetchone()[0]
            == 0
        )
        ids = conn.execute("SELECT min(row_id), max(row_id), count(*) FROM chartevents").fetchone()
        assert ids == (0, ids[2] - 1, ids[2])


def test_mimic_demo_runs_ehrsql_gold_queries(mimic):
    report, _ = mimic
    queries = _gold_queries("mimic_iii")
    assert len(queries) > 700
    nonempty = 0
    with _connect(report.path) as conn:
        for q in queries:
            rows = conn.execute(q).fetchall()  # raises on any SQL error
            nonempty += bool(rows) and rows[0][0] not in (None, 0)
    assert nonempty > 30


def test_mimic_import_is_deterministic_per_patient():
    a = importers._weighted_year(importers.random.Random("0:mimic_iii:10006"))
    b = importers._weighted_year(importers.random.Random("0:mimic_iii:10006"))
    assert a == b and 2100 <= a <= 2105
    assert importers._item_cost(0, "x", "labevents", 50813, 10) == importers._item_cost(
        0, "x", "labevents", 50813, 10
    )


# --------------------------------------------------------------------------- eICU


def test_eicu_demo(eicu):
    rows = _manifest_rows()
    read = {Path(i["path"]).name: i for i in eicu.inputs}
    for name, rec in read.items():
        assert rec["rows_read"] == rows[f"eicu_demo/{name}"], name
    assert eicu.missing_tables == ["lab", "vitalperiodic"]
    man = home.read_manifest(eicu.path)
    assert man["missing_tables"] == ["lab", "vitalperiodic"]
    assert any("lab, vitalperiodic" in n for n in man["notes"])
    with _connect(eicu.path) as conn:
        assert schema.check_schema(conn, "eicu") == []
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in eicu.tables}
        assert counts == eicu.tables
        assert counts["lab"] == 0 and counts["vitalperiodic"] == 0
        assert 1500 < counts["patient"] <= 2520
        for t in ("diagnosis", "treatment", "medication", "allergy", "intakeoutput", "microlab"):
            assert counts[t] > 0, t
        assert counts["cost"] == sum(counts[t] for t in ("diagnosis", "treatment", "medication"))
        for table, cols in _time_columns("eicu").items():
            for col in cols:
                lo, hi = conn.execute(f"SELECT min({col}), max({col}) FROM {table}").fetchone()
                if hi is not None:
                    assert hi <= importers.CURRENT_TIME, (table, col)
                    # hospital admissions start in 2100; a few events are charted (as in
                    # eICU itself) before the hospital admission, as EHRSQL keeps them
                    assert lo >= ("2100-01-01" if table == "patient" else "2099-01-01"), (
                        table,
                        col,
                    )
        assert conn.execute(
            "SELECT count(*) FROM patient WHERE unitadmittime < hospitaladmittime"
        ).fetchone() == (0,)
        assert conn.execute("SELECT DISTINCT gender FROM patient ORDER BY 1").fetchall() == [
            ("female",),
            ("male",),
        ]
        names = [r[0] for r in conn.execute("SELECT DISTINCT diagnosisname FROM diagnosis")]
        assert "|" not in "".join(names) and names == [n.lower() for n in names]
        labels = {r[0] for r in conn.execute("SELECT DISTINCT celllabel FROM intakeoutput")}
        assert not any(lbl.endswith((" intake", " output")) for lbl in labels)
        queries = _gold_queries("eicu")
        assert len(queries) > 700
        for q in queries:
            conn.execute(q).fetchall()


# --------------------------------------------------------------------------- inputs and atomicity


def _subset(tmp_path: Path) -> Path:
    """A small MIMIC-III folder mixing .csv and .csv.gz and name cases."""
    d = tmp_path / "subset"
    d.mkdir()
    (d / "admissions.csv").write_bytes(
        gzip.decompress((MIMIC_DEMO / "ADMISSIONS.csv.gz").read_bytes())
    )
    (d / "PATIENTS.csv.gz").symlink_to(MIMIC_DEMO / "PATIENTS.csv.gz")
    (d / "D_ICD_DIAGNOSES.csv").write_bytes(
        gzip.decompress((MIMIC_DEMO / "D_ICD_DIAGNOSES.csv.gz").read_bytes())
    )
    shutil.copy(MIMIC_DEMO / "DIAGNOSES_ICD.csv.gz", d / "Diagnoses_Icd.csv.gz")
    return d


def test_csv_and_csv_gz_inputs_give_the_same_rows(tmp_path, mimic):
    report, _ = mimic
    sub = _subset(tmp_path)
    out = tmp_path / "sub.sqlite"
    small = importers.import_mimic_iii(sub, out, chunk_rows=333)
    assert small.tables["admissions"] == report.tables["admissions"]
    assert small.tables["diagnoses_icd"] == report.tables["diagnoses_icd"]
    assert small.tables["chartevents"] == 0
    assert "chartevents" in small.missing_tables and "labevents" in small.missing_tables
    with _connect(out) as a, _connect(report.path) as b:
        for table in ("patients", "admissions", "diagnoses_icd", "d_icd_diagnoses"):
            q = f"SELECT * FROM {table} ORDER BY row_id"
            assert a.execute(q).fetchall() == b.execute(q).fetchall(), table


def test_interrupted_import_leaves_nothing_finished(tmp_path):
    out = tmp_path / "db" / "mimic_iii.sqlite"

    def boom(stage, done, total):
        if stage == "diagnoses_icd":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        importers.import_mimic_iii(_subset(tmp_path), out, progress=boom)
    assert not out.exists() and home.read_manifest(out) is None
    assert [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(ConfigurationError, match="not found"):
        home.require_db("mimic_iii", tmp_path)

    # a finished database survives a failed rebuild
    importers.import_mimic_iii(tmp_path / "subset", out)
    before = home.read_manifest(out)

    def fail(stage, done, total):
        if stage == "labevents":
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        importers.import_mimic_iii(tmp_path / "subset", out, progress=fail)
    assert home.read_manifest(out) == before and home.sha256_file(out) == before["sha256"]
    assert [s.kind for s in home.status(tmp_path)] == ["database"]


def test_import_errors_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="not a directory"):
        importers.import_mimic_iii(tmp_path / "nowhere", tmp_path / "x.sqlite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match=r"PATIENTS\.csv"):
        importers.import_mimic_iii(tmp_path / "empty", tmp_path / "x.sqlite")
    with pytest.raises(ConfigurationError, match=r"patient\.csv"):
        importers.import_eicu(tmp_path / "empty", tmp_path / "y.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "x.sqlite.lock", "y.sqlite.lock"]


def test_default_output_goes_to_the_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(tmp_path / "h"))
    rep = importers.import_mimic_iii(_subset(tmp_path))
    assert rep.path == home.db_path("mimic_iii")
    assert home.require_db("mimic_iii") == rep.path


# --------------------------------------------------------------------------- TREQS


def _treqs_queries() -> list[str]:
    path = MIRROR / "treqs_mimicsql/medagentgym_split/treqs_test_tasks_noanswer.jsonl.gz"
    out = []
    for line in gzip.decompress(path.read_bytes()).decode().splitlines():
        q = json.loads(line)["query"]
        if q.count("'") % 2 == 0:  # a few upstream queries have broken quoting
            out.append(q)
    return out


def test_treqs_from_csv(tmp_path):
    rep = importers.build_treqs_from_mimic(MIMIC_DEMO, tmp_path / "treqs.sqlite")
    assert rep.tables["demographic"] == 129  # one row per admission
    assert rep.tables["diagnoses"] > 1500 and rep.tables["lab"] > 50000
    man = home.read_manifest(rep.path)
    assert man["origin"] == "physionet-csv" and man["unavailable_columns"] == []
    with _connect(rep.path) as conn:
        assert schema.check_schema(conn, "treqs") == []
        row = conn.execute(
            "SELECT age, dob_year, admityear, days_stay, name, gender, dod_year FROM demographic "
            "WHERE hadm_id = 142345"
        ).fetchone()
        assert row[0] == row[2] - row[1] == 70 and row[3] == 8
        assert row[4] == row[4].lower() and " " in row[4] and row[5] == "f"
        assert row[6] == 2165.0
        assert (
            conn.execute(
                "SELECT count(*) FROM demographic WHERE age > 89 AND age < 200"
            ).fetchone()[0]
            == conn.execute("SELECT count(*) FROM demographic WHERE age > 89").fetchone()[0]
        )
        dose = conn.execute("SELECT drug_dose FROM prescriptions LIMIT 1").fetchone()[0]
        assert dose == "0.5ml"
        nonempty = 0
        queries = _treqs_queries()
        assert len(queries) > 900
        for q in queries:
            rows = conn.execute(q).fetchall()
            nonempty += bool(rows) and rows[0][0] not in (None, 0)
        assert nonempty > 100


def test_treqs_from_imported_database(mimic, tmp_path):
    report, _ = mimic
    rep = importers.build_treqs_from_mimic(report.path, tmp_path / "treqs.sqlite")
    assert rep.tables["demographic"] == report.tables["admissions"]
    assert rep.tables["lab"] == report.tables["labevents"]
    man = home.read_manifest(rep.path)
    assert man["origin"] == "ehrsql-sqlite" and "lab.fluid" in man["unavailable_columns"]
    with _connect(rep.path) as conn:
        assert schema.check_schema(conn, "treqs") == []
        for q in _treqs_queries()[:200]:
            conn.execute(q).fetchall()
    with pytest.raises(ConfigurationError, match="MIMIC-III not found"):
        importers.build_treqs_from_mimic(tmp_path / "none.sqlite", tmp_path / "t2.sqlite")


# --------------------------------------------------------------------------- MedAgentGym release


def _fake_release(root: Path) -> Path:
    d = root / "MedAgentGym" / "data"
    (d / "mimic_iii").mkdir(parents=True)
    conn = sqlite3.connect(d / "mimic_iii" / "mimic_iii.db")
    conn.execute("CREATE TABLE patients (row_id INT)")
    conn.commit()
    conn.close()
    # EHR task files carry their answers (a file without them is refused: test_official_release)
    (d / "mimic_iii" / "train_tasks.jsonl").write_text(
        '{"id": 1, "answer": [[1]]}\n{"id": 2, "answer": [[2]]}\n')
    (d / "mimic_iii" / "valid_tasks.jsonl").write_text('{"id": 3, "answer": [[3]]}\n\n')
    (d / "biocoder").mkdir()
    (d / "biocoder" / "test_tasks.jsonl").write_text('{"id": "a"}\n')
    (d / "biocoder" / "extra.csv").write_text("a,b\n")
    (d / "notes").mkdir()  # no task files: not a dataset
    return root / "MedAgentGym"


def test_import_medagentgym_registers_in_place(tmp_path):
    rel = _fake_release(tmp_path)
    recs = importers.import_medagentgym(rel, tmp_path / "h")
    assert set(recs) == {"mimic_iii", "biocoder"}
    m = recs["mimic_iii"]
    assert m["tasks"]["train"]["tasks"] == 2 and m["tasks"]["valid"]["tasks"] == 1
    assert m["databases"]["mimic_iii.db"]["tables"] == ["patients"]
    assert recs["biocoder"]["csv_files"] == ["extra.csv"]
    reg = home.load_registry(tmp_path / "h")
    assert reg["medagentgym/mimic_iii"]["path"] == str(rel / "data" / "mimic_iii")
    st = {(s.kind, s.name) for s in home.status(tmp_path / "h")}
    assert ("external", "medagentgym/biocoder") in st
    assert not (tmp_path / "h" / "db").exists()  # nothing copied
    # the data/ folder itself is accepted too
    assert set(importers.import_medagentgym(rel / "data", tmp_path / "h")) == set(recs)


def test_import_medagentgym_validation(tmp_path):
    rel = _fake_release(tmp_path)
    (rel / "data" / "mimic_iii" / "valid_tasks.jsonl").write_text("{broken\n")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        importers.import_medagentgym(rel, tmp_path / "h")
    (rel / "data" / "mimic_iii" / "valid_tasks.jsonl").write_text('{"answer": [[1]]}\n')
    (rel / "data" / "mimic_iii" / "mimic_iii.db").write_bytes(b"not a database at all")
    with pytest.raises(ConfigurationError, match="not a SQLite database"):
        importers.import_medagentgym(rel, tmp_path / "h")
    (tmp_path / "void").mkdir()
    with pytest.raises(ConfigurationError, match="no MedAgentGym datasets"):
        importers.import_medagentgym(tmp_path / "void", tmp_path / "h")
    assert home.load_registry(tmp_path / "h") == {}
