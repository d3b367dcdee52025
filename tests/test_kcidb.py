"""KCIDB documents: built from real result directories, valid for kcidb-io's latest schema,
and a broken one refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kcidb_io
import pytest

from harness.ci import nightly
from harness.cli import main
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.report import kcidb

DATA = Path(__file__).parent / "data" / "nightly"
RELEASE = "6.1.0-57-amd64"
STAMP = "nightly-20261201-020000"


def night(tmp_path: Path) -> Path:
    directory = tmp_path / STAMP / RELEASE
    shutil.copytree(DATA / "night" / RELEASE, directory)
    return directory


def test_latest_schema_is_the_one_used() -> None:
    assert kcidb.SCHEMA is kcidb_io.schema.LATEST
    assert (kcidb.SCHEMA.major, kcidb.SCHEMA.minor) >= (5, 3)


def test_real_night_is_valid_kcidb(tmp_path: Path) -> None:
    doc = nightly.build_kcidb(night(tmp_path), RELEASE, stamp=STAMP, config_name="smoke")
    kcidb_io.schema.LATEST.validate_exactly(doc)  # raises if not
    tests = doc["tests"]
    campaign = [t for t in tests if ":campaign:" in t["id"]]
    testcases = [t for t in tests if ":testcases:" in t["id"]]
    assert len(campaign) == 10 and len(testcases) == 24
    assert {t["path"] for t in campaign} == {"nvme.multipath.ns_remove_path"}
    assert [t["status"] for t in campaign].count("FAIL") == 6
    assert testcases[0]["path"] == (
        "nvme.multipath.testcases.test_001_target_setup.test_target_in_configfs"
    )
    paths = {t["path"] for t in testcases}
    assert "nvme.multipath.testcases.test_004_clean_after_kill.test_clean_after_kill.0_3" in paths
    assert [t["status"] for t in testcases].count("SKIP") == 1
    for test in tests:
        assert test["id"].startswith(f"nvmf_harness:{STAMP}:{RELEASE}:smoke:")
        assert test["log_url"].startswith("file:///")
    assert doc["builds"][0]["status"] == "PASS"


def test_written_file_validates(tmp_path: Path) -> None:
    """What the CI's nightly leaves: kcidb.json that kcidb-io validates as it is on disk."""
    directory = night(tmp_path)
    nightly.write_kernel(directory, RELEASE, stamp=STAMP, campaign_rc=1, testcases_rc=0)
    doc = json.loads((directory / nightly.KCIDB_FILE).read_text())
    assert kcidb_io.schema.LATEST.is_valid(doc)
    assert doc["version"] == {"major": kcidb.SCHEMA.major, "minor": kcidb.SCHEMA.minor}


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("test_fault_is_recorded[ctrl_delete]", "test_fault_is_recorded.ctrl_delete"),
        ("test_clean_after_kill[9.49]", "test_clean_after_kill.9_49"),
        ("testcases.test_001 x", "testcases.test_001_x"),
        ("a..b", "a.b"),
    ],
)
def test_paths_are_kcidb_dotted(text: str, path: str) -> None:
    assert kcidb.test_path(text) == path


def test_broken_document_is_refused_with_one_line(tmp_path: Path) -> None:
    doc = nightly.build_kcidb(night(tmp_path), RELEASE, stamp=STAMP)
    doc["tests"][3]["path"] = "nvmf-harness.multipath.[broken]"
    doc["tests"][3]["origin"] = "nvmf-harness"
    with pytest.raises(HarnessError) as caught:
        kcidb.write(tmp_path / "kcidb.json", doc)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"not a valid KCIDB {kcidb.SCHEMA} document: tests[3].")
    assert not (tmp_path / "kcidb.json").exists()


def test_relative_log_name_is_not_a_uri(tmp_path: Path) -> None:
    """Why log URLs are file:// URLs: the schema's uri format refuses a bare relative name."""
    doc = nightly.build_kcidb(night(tmp_path), RELEASE, stamp=STAMP)
    doc["tests"][0]["log_url"] = "campaign/iterations/0001/kmsg.txt"
    with pytest.raises(HarnessError, match=r"tests\[0\]\.log_url: .* is not a 'uri'"):
        kcidb.validate(doc)


def test_main_refuses_a_bad_known_failure_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "known.toml"
    bad.write_text(
        '[[failure]]\nkernel = "*"\nscenario = "s"\nexpected_rate = 2\nreason = "r"\n'
        'link = "https://example.org/"\n'
    )
    argv = ["kcidb", str(night(tmp_path)), "--release", RELEASE, "--stamp", STAMP]
    argv += ["--campaign-rc", "1", "--testcases-rc", "0", "--known-failures", str(bad)]
    assert main(["nightly", *argv]) == ExitCode.USAGE  # a bad file: bad input
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "failure #1 (s): expected_rate" in err
