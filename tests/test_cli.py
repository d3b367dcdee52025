"""The command line: one-line errors with exit status 2 for bad input, `report` on results."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cli.app import main
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE, JsonlWriter, Verdict
from tests.test_results import record_dict


@pytest.fixture(autouse=True)
def keep_sigterm() -> Iterator[None]:
    """main() installs a SIGTERM handler for the campaign; give pytest its own back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in text
    return lines[0]


BROKEN_CONFIGS = {
    "not TOML": ("[campaign\niterations = 3\n", "not valid TOML"),
    "unknown field": ("[campaign]\niterationz = 3\n", "unknown field 'iterationz'"),
    "bad type": ('[workload]\niodepth = "deep"\n', "workload.iodepth: expected an integer"),
    "out of range": ("[target]\npaths = 1\n", "target.paths: 1 is out of range"),
    "bad fault": ('[campaign]\nfaults = ["unplug"]\n', "campaign.faults[0]"),
    "bad combination": (
        '[campaign]\nfaults = ["link_down"]\n[target]\nnetwork = "loopback"\n',
        "link_down needs",
    ),
    "binary": ("\xff\xfe[campaign]", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
@pytest.mark.parametrize("command", ["run", "vm"])
def test_broken_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    text, expected = BROKEN_CONFIGS[case]
    config = tmp_path / "broken.toml"
    config.write_bytes(text.encode("latin-1"))
    out = tmp_path / "out"
    status = main([command, "--config", str(config), "--out", str(out)])
    captured = capsys.readouterr()
    assert status == ExitCode.USAGE
    line = one_line(captured.err)
    assert line.startswith("nvmf-harness: config error: ")
    assert str(config) in line
    assert expected in line
    assert captured.out == ""
    assert not out.exists()  # nothing ran, nothing was made


def test_missing_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    status = main(["run", "--config", str(missing), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == ExitCode.USAGE
    line = one_line(captured.err)
    assert str(missing) in line
    assert "cannot read" in line


def test_a_config_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["vm", "--config", str(tmp_path), "--out", str(tmp_path / "out")])
    assert status == ExitCode.USAGE
    assert "cannot read" in one_line(capsys.readouterr().err)


# --- report ---------------------------------------------------------------------------------------


def write_results(directory: Path, records: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(directory / RESULTS_FILE) as writer:
        for record in records:
            writer.append(record)
    return directory


def passing_run(tmp_path: Path) -> Path:
    return write_results(
        tmp_path / "results",
        [
            record_dict(iteration=1, fault="ctrl_delete", path=0),
            record_dict(iteration=2, fault="ctrl_reset", path=0),
            record_dict(iteration=3, fault="ctrl_delete", path=1),
            record_dict(
                iteration=4,
                fault="ns_disable",
                app_eio=3,
                another_path_live=False,
                verdict=Verdict.EXPECTED_EIO,
            ),
        ],
    )


def table_rows(text: str) -> dict[str, list[str]]:
    lines = text.strip().splitlines()
    assert lines[0].split()[:2] == ["fault", "iters"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    return {line.split()[0]: line.split()[1:] for line in lines[2:]}


def test_report_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(passing_run(tmp_path))])
    captured = capsys.readouterr()
    assert status == ExitCode.OK
    rows = table_rows(captured.out)
    assert list(rows) == ["ctrl_delete", "ctrl_reset", "ns_disable", "all"]
    assert rows["ctrl_delete"][0] == "2"  # iterations
    assert rows["ns_disable"][1:3] == ["1", "3"]  # iterations with EIO, EIO count
    assert rows["all"][0] == "4"
    assert captured.err == ""


def test_report_accepts_the_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = passing_run(tmp_path) / RESULTS_FILE
    assert main(["report", str(results)]) == ExitCode.OK
    assert table_rows(capsys.readouterr().out)["all"][0] == "4"


def test_report_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--json", str(passing_run(tmp_path))]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert [row["fault"] for row in data] == ["ctrl_delete", "ctrl_reset", "ns_disable", "all"]
    assert data[-1]["iterations"] == 4


def test_report_requirements_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["report", str(passing_run(tmp_path)), "--require-iterations", "4", "--require-faults", "3"]
    )
    assert status == ExitCode.OK
    assert "nvmf-harness:" not in capsys.readouterr().out


def test_report_too_few_iterations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(passing_run(tmp_path)), "--require-iterations", "5"])
    assert status == ExitCode.FAILED
    assert "nvmf-harness: 4 iterations recorded, 5 required" in capsys.readouterr().out


def test_report_too_few_faults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(passing_run(tmp_path)), "--require-faults", "4"])
    assert status == ExitCode.FAILED
    assert "3 fault kinds recorded, 4 required" in capsys.readouterr().out


def test_report_failing_verdicts_fail_a_requirement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = write_results(
        tmp_path / "r",
        [
            record_dict(iteration=1),
            record_dict(iteration=2, app_eio=1, eod_race_lines=1, verdict=Verdict.EIO_RACE),
        ],
    )
    assert main(["report", str(results)]) == ExitCode.OK  # no requirement: the table only
    capsys.readouterr()
    assert main(["report", str(results), "--require-iterations", "2"]) == ExitCode.FAILED
    assert "failing or infra-error verdicts: eio_race" in capsys.readouterr().out


def test_report_of_a_crashed_vm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = passing_run(tmp_path)
    with JsonlWriter(results / RESULTS_FILE) as writer:
        writer.append(
            {"run_id": "r", "iteration": 5, "fault": "unknown", "verdict": "kernel_crash"}
        )
    status = main(["report", str(results)])
    out = capsys.readouterr().out
    assert status == ExitCode.FAILED
    assert "1 record(s) of a crashed or timed-out VM" in out
    assert "unknown" not in table_rows(out.split("nvmf-harness:")[0])  # not an iteration


def test_report_of_a_missing_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["report", str(tmp_path / "nothing")])
    captured = capsys.readouterr()
    assert status not in (ExitCode.OK, ExitCode.FAILED)
    line = one_line(captured.err)
    assert "nothing" in line
    assert "not found" in line


def test_a_vm_campaign_runs_a_frozen_copy_of_its_config(tmp_path: Path) -> None:
    """The guest reads <outdir>/campaign.toml, written when the campaign was planned; an
    edit of the original file while it waits for its turn in the VM changes nothing."""
    from harness.config import campaign as config_mod
    from harness.vm.campaigns import FROZEN_CONFIG, PlannedCampaign, guest_run_args
    from harness.vm.options import RunOptions

    source = tmp_path / "race.toml"
    source.write_text(
        '[campaign]\nfaults = ["ns_remove_path"]\n[ns_remove_path]\nmechanism = "hidden"\n'
    )
    config = config_mod.load(source)
    outdir = tmp_path / "out" / "unfixed"
    run = PlannedCampaign(source, config, outdir, "unfixed")
    guest = guest_run_args(RunOptions(iterations=3), run)
    frozen = Path(guest[guest.index("--config") + 1])
    assert frozen == outdir / FROZEN_CONFIG
    source.write_text('[campaign]\nfaults = ["ctrl_delete"]\n')
    again = config_mod.load(frozen)
    assert again == config
    assert again.ns_remove_path.mechanism == "hidden"
    assert guest[guest.index("--iterations") + 1] == "3"


def test_a_missing_kernel_image_is_one_line_before_any_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["vm", "--out", str(tmp_path / "x"), "--kernel", str(tmp_path / "nope")])
    assert status != ExitCode.OK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such kernel image file" in err[0]
    assert not (tmp_path / "x" / RESULTS_FILE).exists()
