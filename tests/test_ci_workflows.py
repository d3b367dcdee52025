"""The example CI files: valid for their service (check-jsonschema's vendored schemas, which
work offline) and shaped as documented: a matrix of (kernel, scenario) jobs, one command
each, and a merge job that runs ``nvmf-harness report --merge``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
GITHUB = REPO / ".github" / "workflows" / "nightly.yml"
GITLAB = REPO / ".gitlab-ci.yml"
SCHEMAS = {GITHUB: "vendor.github-workflows", GITLAB: "vendor.gitlab-ci"}


def check(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_workflow_is_valid_for_its_service(path: Path) -> None:
    result = check(path, SCHEMAS[path])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_schema_check_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text(GITLAB.read_text().replace("  script:\n", "  scripts:\n", 1))
    result = check(broken, "vendor.gitlab-ci")
    assert result.returncode == 1
    assert "'scripts' was unexpected" in result.stdout


def test_github_matrix_one_command_per_job_and_a_merge_job() -> None:
    jobs = load(GITHUB)["jobs"]
    matrix = jobs["nightly"]["strategy"]["matrix"]
    assert set(matrix) == {"kernel", "scenario"}
    runs = [
        step["run"] for step in jobs["nightly"]["steps"] if "scripts/nightly" in step.get("run", "")
    ]
    assert len(runs) == 1
    assert '--scenario "$SCENARIO" "$KERNEL"' in runs[0]
    merge = jobs["merge"]
    assert merge["needs"] == "nightly"
    assert "!cancelled()" in merge["if"]
    assert any("report --merge" in step.get("run", "") for step in merge["steps"])


def test_gitlab_matrix_one_command_per_job_and_a_merge_job() -> None:
    data = load(GITLAB)
    nightly = data["nightly"]
    (cell,) = nightly["parallel"]["matrix"]
    assert set(cell) == {"KERNEL", "SCENARIO"}
    assert [line for line in nightly["script"] if "scripts/nightly" in line] == [
        'sudo NVMF_NIGHTLY_OUT="$PWD/$JOB_DIR/$STAMP" scripts/nightly --scenario "$SCENARIO" '
        '"$KERNEL"'
    ]
    merge = data["merge"]
    assert merge["needs"] == [{"job": "nightly", "artifacts": True}]
    assert merge["when"] == "always"
    assert any("report --merge" in line for line in merge["script"])


def nightly(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "nightly"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nightly_scenario_option_names_a_config() -> None:
    # The tool check comes first; where the VM tools are missing the script says so, exit 2.
    result = nightly("--scenario", "no-such-scenario", "6.1.0-57-amd64")
    assert result.returncode == 2
    assert (
        "configs/no-such-scenario.toml not found" in result.stderr
        or "missing tool" in result.stderr
    )
    result = nightly("--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr or "missing tool" in result.stderr
