"""``medagentgym data``: the command group over the data-home APIs (CliRunner, a temporary home)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medagentgym.cli.data import app
from medagentgym.data import home
from medagentgym.errors import ConfigurationError

MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
runner = CliRunner()


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv(home.ENV_VAR, str(root))
    return root


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_build_synthetic_is_finished_and_idempotent(data_home):
    first = _json(invoke("build-synthetic", "--patients", "30", "--json"))
    from medagentgym.data import databases

    expected = [d for d in databases.db_ids() if databases.get_database(d).synthetic]
    assert [d["db"] for d in first["databases"]] == expected
    assert expected[:3] == ["mimic_iii", "eicu", "treqs"]
    for d in first["databases"]:
        path = Path(d["path"])
        assert d["built"] and d["rows"] > 0 and d["tables"] >= 5
        assert path.parent == data_home / "db" and path.name == f"synthetic_{d['db']}_p30_s0.sqlite"
        assert home.is_finished(path) and home.is_finished(path.with_suffix(".csv"))
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            rows = sum(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names)
        finally:
            conn.close()
        assert (len(names), rows) == (d["tables"], d["rows"])
    mtimes = {d["db"]: Path(d["path"]).stat().st_mtime_ns for d in first["databases"]}
    manifests = {d["db"]: home.read_manifest(d["path"]) for d in first["databases"]}

    started = time.monotonic()
    second = invoke("build-synthetic", "--patients", "30")
    assert second.exit_code == 0, second.output
    assert time.monotonic() - started < 5
    lines = second.stdout.strip().splitlines()
    assert len(lines) == len(expected) and all(" present " in line for line in lines)
    for d in first["databases"]:
        assert Path(d["path"]).stat().st_mtime_ns == mtimes[d["db"]]  # not rebuilt
        assert home.read_manifest(d["path"]) == manifests[d["db"]]
        assert f"{d['rows']:,} rows" in second.stdout


def test_build_synthetic_subset_and_home_option(tmp_path, data_home):
    other = tmp_path / "other"
    out = _json(
        invoke(
            "build-synthetic", "--patients", "30", "--db", "treqs", "--json", "--home", str(other)
        )
    )
    assert [d["db"] for d in out["databases"]] == ["treqs"]
    assert Path(out["databases"][0]["path"]).parent == other / "db"
    assert not data_home.exists()  # --home overrides $MEDAGENTGYM_HOME


def test_unknown_database_is_a_configuration_error(data_home):
    result = runner.invoke(app, ["build-synthetic", "--db", "mimic_v"])
    assert isinstance(result.exception, ConfigurationError)
    assert "mimic_v" in str(result.exception) and "\n" not in str(result.exception)


def test_missing_from_dir_is_one_line_and_exit_2(tmp_path, data_home):
    missing = tmp_path / "nowhere"
    for args in (
        ["import", "mimic-iii", "--from", str(missing)],
        ["import", "eicu", "--from", str(missing)],
        ["import", "medagentgym", "--from", str(missing)],
        ["pull", "ehrsql", "--from", str(missing)],
        ["build-treqs", "--from", str(missing)],
    ):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigurationError), (args, result.output)
        msg = str(result.exception)
        assert str(missing) in msg and "\n" not in msg
    assert not (data_home / "db").exists()
    # through the real entry point: one line on stderr, exit status 2
    code = (
        "import sys, typer\n"
        "from medagentgym.cli import data\n"
        "import medagentgym.cli as cli\n"
        "if not any(g.name == 'data' for g in cli.app.registered_groups):\n"
        "    cli.app.add_typer(data.app, name='data')\n"
        "cli.main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "data", "import", "mimic-iii", "--from", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(missing) in err


def test_build_treqs_without_mimic_explains(data_home):
    result = runner.invoke(app, ["build-treqs"])
    assert isinstance(result.exception, ConfigurationError)
    assert "import mimic-iii" in str(result.exception)


def test_pull_needs_exactly_one_of_name_and_all(data_home):
    for args in (["pull"], ["pull", "ehrsql", "--all"]):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigurationError)
    result = runner.invoke(app, ["pull", "no_such_source", "--from", str(data_home.parent)])
    assert isinstance(result.exception, ConfigurationError)
    assert "known sources" in str(result.exception)


def test_list_and_status_json_on_an_empty_home(data_home):
    listing = _json(invoke("list", "--json"))
    names = {s["name"] for s in listing["sources"]}
    assert {"ehrsql", "mimic_iii_demo", "eicu_demo"} <= names
    assert not any(s["present"] for s in listing["sources"])
    assert {d["name"] for d in listing["databases"]} >= {"mimic_iii", "eicu", "treqs"}
    st = _json(invoke("status", "--json"))
    assert st == {"home": str(data_home), "artefacts": []}
    human = invoke("status")
    assert human.exit_code == 0 and "nothing in" in human.stdout
    human = invoke("list")
    assert human.exit_code == 0 and "ehrsql" in human.stdout


needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason="shared data mirror not available")


@needs_mirror
@pytest.mark.skipif(not (MIRROR / "mimic_iii_demo").is_dir(), reason="no MIMIC-III demo mirror")
def test_import_mimic_iii_then_status(data_home):
    result = invoke("import", "mimic-iii", "--from", str(MIRROR / "mimic_iii_demo"))
    assert result.exit_code == 0, result.output
    assert "mimic_iii:" in result.stdout and "build-treqs" in result.stdout
    db = data_home / "db" / "mimic_iii.sqlite"
    assert home.is_finished(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o644  # the sandbox's user mounts it
    st = _json(invoke("status", "--json"))
    entries = {(a["kind"], a["name"]): a for a in st["artefacts"]}
    mimic = entries[("database", "mimic_iii")]
    assert mimic["finished"] and mimic["path"] == str(db) and mimic["bytes"] > 0
    assert mimic["builder"].endswith("import_mimic_iii")
    table = invoke("status")
    assert table.exit_code == 0 and "mimic_iii" in table.stdout and "database" in table.stdout
    listing = _json(invoke("list", "--json"))
    assert {d["name"]: d["imported"] for d in listing["databases"]}["mimic_iii"] is True

    treqs = invoke("build-treqs")  # from the imported database
    assert treqs.exit_code == 0, treqs.output
    out = data_home / "db" / "treqs.sqlite"
    assert home.is_finished(out) and stat.S_IMODE(out.stat().st_mode) == 0o644


@needs_mirror
@pytest.mark.skipif(not (MIRROR / "ehrsql").is_dir(), reason="no EHRSQL mirror")
def test_pull_then_verify(data_home):
    result = invoke("pull", "ehrsql", "--from", str(MIRROR))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ehrsql: ") and "fetched" in result.stdout
    raw = data_home / "raw" / "ehrsql"
    assert home.is_finished(raw)
    again = invoke("pull", "ehrsql", "--from", str(MIRROR))
    assert again.exit_code == 0 and "0 fetched" in again.stdout

    ok = _json(invoke("verify", "ehrsql", "--json"))
    assert ok["ok"] and ok["problems"] == {} and ok["files"] > 0
    assert invoke("verify", "ehrsql").stdout.startswith("ehrsql: ok")

    # a corrupted file is reported and the exit status is 1
    victim = next(p for p in sorted(raw.rglob("*")) if p.is_file())
    os.chmod(victim, 0o644)
    victim.write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", "ehrsql", "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert not report["ok"] and str(victim.relative_to(raw)) in report["problems"]

    listing = _json(invoke("list", "--json"))
    assert {s["name"]: s["present"] for s in listing["sources"]}["ehrsql"] is True


def test_verify_of_a_source_never_pulled(data_home):
    result = runner.invoke(app, ["verify", "ehrsql"])
    assert isinstance(result.exception, ConfigurationError)
    assert "data pull ehrsql" in str(result.exception)
