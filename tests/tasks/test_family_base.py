"""The family base (options, splits, task cache), typed per-family options, the database
registry and typed ground truth."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from medagentgym.data import databases
from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import registry
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import DatasetSpec, option
from medagentgym.types import TRUTH_KINDS, Grade, GroundTruth, Provenance, Task

# --------------------------------------------------------------------------- a toy family


class CountOptions(DatasetOptions):
    n: int = option(4, "tasks per split", ge=1, client_le=10)
    flavour: str = option("plain", "what the dataset is", scope="identity")


class CountFamily(DatasetFamily):
    """Tasks "store i in answer", built from nothing: only what a family must write."""

    Options: ClassVar[type[CountOptions]] = CountOptions
    builds = 0

    def cache_key(self) -> dict[str, Any]:
        return {"n": self.options.n, "flavour": self.options.flavour}

    def build_records(self) -> list[dict[str, Any]]:
        type(self).builds += 1
        out = []
        for split in self.spec.splits:
            for i in range(self.options.n):
                task = Task(id=f"{self.name}-{split}-{i}", dataset=self.name, category="count",
                            split=split, goal=f"Store {i} in answer.",
                            provenance=Provenance(source="tests"))
                out.append(self.record(task, GroundTruth(kind="sample_size", value=i + 1,
                                                         solution=f"answer = {i + 1}")))
        return out

    def instructions(self, task: Task) -> str:
        return "Store the number in `answer`."

    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        ok = answer == task.truth.value
        return Grade.right("right") if ok else Grade.wrong("wrong")


@pytest.fixture
def count_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(tmp_path))
    spec = registry.register(DatasetSpec("count_toy", f"{__name__}:CountFamily", "toy",
                                         "tests", splits=("train", "test")))
    registry.clear_cache()
    CountFamily.builds = 0
    yield spec
    registry._REGISTRY.pop("count_toy", None)
    registry.clear_cache()


def test_a_family_writes_only_build_records_and_gets_splits_and_a_cache(count_dataset, tmp_path):
    fam = registry.get_family("count_toy", n=3)
    assert [t.id for t in fam.load_tasks("test")] == [f"count_toy-test-{i}" for i in range(3)]
    assert fam.load_tasks("train")[2].truth.value == 3
    cache = fam.cache_file()
    assert cache.parent == _home.tasks_dir("count_toy") and cache.name.startswith("tasks-")
    assert cache.stat().st_mode & 0o777 == 0o600
    manifest = _home.read_manifest(cache)
    assert manifest["builder"].endswith("CountFamily") and manifest["tasks"] == 6
    registry.clear_cache()
    registry.get_family("count_toy", n=3).load_tasks("test")
    assert CountFamily.builds == 1  # read back, not rebuilt
    with pytest.raises(ConfigurationError, match="no split 'valid'"):
        fam.load_tasks("valid")


def test_a_cache_that_no_longer_loads_is_rebuilt(count_dataset):
    fam = registry.get_family("count_toy")
    fam.load_tasks("test")
    cache = fam.cache_file()
    lines = cache.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["truth"]["kind"] = "a kind of an older version"
    cache.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    registry.clear_cache()
    tasks = registry.get_family("count_toy").load_tasks("test")
    assert len(tasks) == 4 and CountFamily.builds == 2
    assert json.loads(cache.read_text().splitlines()[0])["truth"]["kind"] == "sample_size"


def test_options_are_typed_bounded_and_one_line(count_dataset):
    with pytest.raises(ConfigurationError) as err:
        registry.get_family("count_toy", database="synthetic")
    msg = str(err.value)
    assert msg == ("count_toy: unknown option 'database' (options: home, n)")
    with pytest.raises(ConfigurationError, match=r"count_toy: n: Input should be greater"):
        registry.get_family("count_toy", n=0)
    with pytest.raises(ConfigurationError, match="flavour is fixed by the dataset"):
        registry.get_family("count_toy", flavour="spicy")
    assert registry.get_family("count_toy", n=50).options.n == 50  # client_le: clients only


def test_the_server_allow_list_is_derived_from_the_family_options(count_dataset):
    from medagentgym.server.app import ENV_OPTION_NAMES, options_model

    model = options_model("count_toy")
    assert set(model.model_fields) - ENV_OPTION_NAMES == {"n"}  # not home, not flavour
    assert model.model_validate({"n": 10}).n == 10
    for bad in ({"n": 11}, {"n": "3"}, {"home": "/"}, {"flavour": "x"}):
        with pytest.raises(ValidationError):
            model.model_validate(bad)


def test_builtin_families_take_only_their_own_options():
    from medagentgym.server.app import ENV_OPTION_NAMES, options_model

    client = {name: set(options_model(name).model_fields) - ENV_OPTION_NAMES
              for name in ("treqs", "ehr_seqsql", "medcalcbench", "npowerai")}
    assert client["treqs"] == client["ehr_seqsql"]
    assert {"database", "patients", "db_seed", "seed", "release", "per_template",
            "test_fraction", "sequence_length"} <= client["treqs"]
    assert not {"home", "mode", "db_id"} & client["treqs"]  # host path, identity
    assert client["medcalcbench"] == {"answer_key", "train_per_calculator", "min_agreement",
                                      "seed"}
    assert client["npowerai"] == {"source", "seed", "train_size", "test_size"}
    for name in ("medcalcbench", "npowerai"):  # no database: no `database` "for uniformity"
        with pytest.raises(ConfigurationError, match=f"{name}: unknown option 'database'"):
            registry.get_family(name, database="synthetic")
    with pytest.raises(ConfigurationError, match="mode is fixed"):
        registry.get_family("mimic_iii", mode="sequence")


# --------------------------------------------------------------------------- databases


def _tiny_generator(path: str | Path, patients: int = 100, seed: int = 0) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE patients (subject_id INTEGER)")
    conn.executemany("INSERT INTO patients VALUES (?)", [(i,) for i in range(patients)])
    conn.commit()
    conn.close()
    return Path(path)


def test_a_database_is_one_registration(tmp_path):
    spec = databases.register_database(databases.DatabaseSpec(
        "tiny_db", "TinyDB", "a tiny database", "tiny",
        synthetic=f"{__name__}:_tiny_generator"))
    try:
        assert "tiny_db" in databases.db_ids()
        path = databases.build_synthetic("tiny_db", patients=3, home=tmp_path)
        assert path.name == "synthetic_tiny_db_p3_s0.sqlite"
        assert (path.with_suffix(".csv") / "patients.csv").is_file()
        db = databases.resolve("tiny_db", "auto", patients=3, home=tmp_path)
        assert db.source == "synthetic" and db.path == path
        assert spec.sandbox_db == "/data/tiny_db.db" and spec.sandbox_csv_dir == "/data/tiny_db"
        with pytest.raises(ConfigurationError) as err:
            _home.require_db("tiny_db", tmp_path)
        assert str(err.value).startswith("TinyDB database not found")
        assert "medagentgym data build-synthetic" in str(err.value)
        with pytest.raises(ConfigurationError, match="already registered differently"):
            databases.register_database(databases.DatabaseSpec("tiny_db", "x", "x", "x"))
    finally:
        databases._DATABASES.pop("tiny_db", None)
    with pytest.raises(ConfigurationError, match="unknown database 'tiny_db'"):
        databases.build_synthetic("tiny_db", home=tmp_path)


def test_datasets_name_registered_databases():
    for name in registry.list_datasets():
        for db_id in registry.get_spec(name).databases:
            assert name in registry.datasets_using(db_id)
    assert registry.datasets_using("mimic_iii") == ["mimic_iii", "ehr_seqsql", "ehrcon"]
    with pytest.raises(ConfigurationError, match="unknown database 'nowhere'"):
        registry.register(DatasetSpec("bad_db_dataset", "x:Y", "x", "x", databases=("nowhere",)))
    assert "bad_db_dataset" not in registry.list_datasets()


def test_request_info_index_lives_in_the_data_layer():
    from medagentgym.data import info as data_info
    from medagentgym.env import info as env_info

    assert env_info is data_info


# --------------------------------------------------------------------------- ground truth

VALID = [
    ("sql_rows", [(7,)], {}), ("sql_rows", [["aspirin", 2.5], ["heparin", None]], {}),
    ("sql_rows", None, {}), ("sql_rows", 7, {}), ("sql_rows", [{"a": 1}], {}),
    ("sequence", [[(7,)], None], {}),
    ("numeric", -0.828, {"lower": -0.7866, "upper": -0.8694}),  # limits either way round
    ("date", "09/23/2014", {}), ("date", "2014-09-23", {}),
    ("weeks_days", [14, 1], {}), ("sample_size", 64, {}), ("power", 0.8, {}),
    ("probe_values", None, {}), ("probe_values", {"t0": 21}, {}),
    ("workspace_file", {"labels": [0, 1]}, {}), ("service_state", [5], {}),
    ("consistency", {"inconsistent": True, "n_fields": 2}, {}),
    ("consistency", {"inconsistent": False, "n_fields": 0}, {}),
]
INVALID = [
    ("consistency", {"inconsistent": True, "n_fields": 0}, {}),
    ("consistency", {"inconsistent": 1, "n_fields": 1}, {}),
    ("consistency", {"inconsistent": False}, {}),
    ("sql_rows", {"a": [1, 2]}, {}), ("sql_rows", [[[1]]], {}),
    ("sequence", [], {}), ("sequence", None, {}),
    ("numeric", 7.0, {}), ("numeric", float("nan"), {"lower": 0, "upper": 1}),
    ("numeric", "7", {"lower": 6, "upper": 8}),
    ("date", "yesterday", {}), ("date", 20140923, {}),
    ("weeks_days", [14], {}), ("weeks_days", [14, -1], {}), ("weeks_days", [True, 1], {}),
    ("sample_size", 64.5, {}), ("sample_size", 0, {}), ("sample_size", True, {}),
    ("power", 82, {}), ("power", None, {}),
    ("probe_values", 3, {}),
    ("toy_probe", None, {}), ("free text", 1, {}),
]


def test_every_kind_has_a_valid_example():
    assert {k for k, _, _ in VALID} == set(TRUTH_KINDS)


@pytest.mark.parametrize(("kind", "value", "extra"), VALID)
def test_ground_truth_accepts_values_of_its_kind(kind, value, extra):
    truth = GroundTruth(kind=kind, value=value, extra=extra)
    again = GroundTruth.model_validate(json.loads(truth.model_dump_json()))  # as from a cache
    assert again.kind == kind


@pytest.mark.parametrize(("kind", "value", "extra"), INVALID)
def test_ground_truth_rejects_values_of_the_wrong_shape(kind, value, extra):
    with pytest.raises(ValidationError):
        GroundTruth(kind=kind, value=value, extra=extra)


def test_a_sequence_has_one_solution_per_stage():
    with pytest.raises(ValidationError, match="one solution per stage"):
        GroundTruth(kind="sequence", value=[[(1,)], [(2,)]], solution=["a = 1"])
