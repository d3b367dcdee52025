"""harness.kernels.source_check on excerpts of real Debian sources (tests/data/kernel-source:
bio_check_eod() and nvme_ns_head_submit_bio() as shipped) and on edited copies of them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.kernels import source_check
from harness.kernels.source_check import EodShape, Prediction, UnknownSource

DATA = Path(__file__).resolve().parent / "data" / "kernel-source"
MULTIPATH = "drivers/nvme/host/multipath.c"
BLK_CORE = "block/blk-core.c"


def tree_copy(tmp_path: Path, name: str) -> Path:
    tree = tmp_path / name
    shutil.copytree(DATA / name, tree)
    return tree


def edit(tree: Path, file: str, old: str, new: str) -> None:
    path = tree / file
    text = path.read_text()
    assert old in text, (file, old)
    path.write_text(text.replace(old, new, 1))


def revert_fix(tree: Path) -> None:
    edit(tree, MULTIPATH, "\t\tbio_set_flag(bio, BIO_REMAPPED);\n", "")


@pytest.mark.parametrize(
    ("name", "version", "fix", "shape", "prediction"),
    [
        ("debian-6.1.176", "6.1.176", False, EodShape.SKIP_ZERO_SIZE, Prediction.NOT_AFFECTED),
        ("debian-6.1.192", "6.1.192", True, EodShape.FAIL_WITH_LINE, Prediction.FIXED),
        ("debian-6.12.117", "6.12.117", True, EodShape.FAIL_WITH_LINE, Prediction.FIXED),
        ("debian-7.3.4", "7.3.4", True, EodShape.FAIL_SILENTLY, Prediction.FIXED),
    ],
)
def test_debian_sources_as_shipped(
    name: str, version: str, fix: bool, shape: EodShape, prediction: Prediction
) -> None:
    check = source_check.check_tree(DATA / name)
    assert (check.version, check.fix, check.eod_shape, check.prediction) == (
        version,
        fix,
        shape,
        prediction,
    )


@pytest.mark.parametrize(
    ("name", "prediction"),
    [
        ("debian-6.1.192", Prediction.AFFECTED_WITH_LINE),  # what 6.1.187-6.1.192 unfixed is
        ("debian-6.12.117", Prediction.AFFECTED_WITH_LINE),
        ("debian-7.3.4", Prediction.AFFECTED_SILENTLY),  # what v6.17..v7.1 shipped
    ],
)
def test_fix_reverted(tmp_path: Path, name: str, prediction: Prediction) -> None:
    tree = tree_copy(tmp_path, name)
    revert_fix(tree)
    check = source_check.check_tree(tree)
    assert not check.fix and check.prediction == prediction


def test_fix_applied_to_a_source_that_cannot_fail_is_fixed(tmp_path: Path) -> None:
    tree = tree_copy(tmp_path, "debian-6.1.176")
    edit(
        tree,
        MULTIPATH,
        "bio_set_dev(bio, ns->disk->part0);\n",
        "bio_set_dev(bio, ns->disk->part0);\n\t\tbio_set_flag(bio, BIO_REMAPPED);\n",
    )
    assert source_check.check_tree(tree).prediction == Prediction.FIXED


def test_the_v6_17_rc3_tone_down_is_the_skip_shape(tmp_path: Path) -> None:
    """d0a2b527d8c3 put ``maxsector &&`` back over a 'fail silently' body (v6.17-rc3..rc7)."""
    tree = tree_copy(tmp_path, "debian-7.3.4")
    edit(tree, BLK_CORE, "if (nr_sectors &&\n", "if (nr_sectors && maxsector &&\n")
    revert_fix(tree)
    assert source_check.check_tree(tree).prediction == Prediction.NOT_AFFECTED


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (BLK_CORE, "if (!maxsector)\n\t\t\treturn -EIO;\n", "", None),  # becomes "with a line"
        (BLK_CORE, "if (nr_sectors &&\n", "if (nr_sectors > 0 &&\n", "no 'if \\(nr_sectors"),
        (BLK_CORE, "\t\tpr_info_ratelimited(", "\t\tpr_warn(", "without pr_info_ratelimited"),
        (BLK_CORE, "bio_check_eod(struct bio *bio)", "bio_validate(struct bio *bio)", "no bio_"),
        (MULTIPATH, "submit_bio_noacct(bio);", "blk_mq_submit_bio(bio);", "does not remap"),
    ],
)
def test_unknown_shapes_are_one_line_not_a_guess(
    tmp_path: Path, file: str, old: str, new: str, message: str | None
) -> None:
    tree = tree_copy(tmp_path, "debian-7.3.4")
    edit(tree, file, old, new)
    if message is None:
        assert source_check.check_tree(tree).eod_shape == EodShape.FAIL_WITH_LINE
        return
    with pytest.raises(UnknownSource, match=message) as info:
        source_check.check_tree(tree)
    assert "\n" not in str(info.value)


def test_silent_check_after_the_print_is_unknown(tmp_path: Path) -> None:
    tree = tree_copy(tmp_path, "debian-7.3.4")
    edit(tree, BLK_CORE, "\t\tif (!maxsector)\n\t\t\treturn -EIO;\n", "")
    edit(
        tree,
        BLK_CORE,
        "\t\treturn -EIO;\n\t}",
        "\t\tif (!maxsector)\n\t\t\treturn -EIO;\n\t\treturn -EIO;\n\t}",
    )
    with pytest.raises(UnknownSource, match="after its print"):
        source_check.check_tree(tree)


def test_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="is not a kernel source tree"):
        source_check.check_tree(tmp_path)


def test_json_fields_and_line() -> None:
    check = source_check.check_tree(DATA / "debian-7.3.4")
    data = check.to_dict()
    assert data["fix"] is True and data["eod_shape"] == "fail-silently"
    assert data["prediction"] == "fixed" and data["fix_commit"] == "88bac2c1a72b"
    assert data["eod_commit"] == "ab073abf6d97"
    assert check.describe() == (
        "linux 7.3.4: fix present (88bac2c1a72b); bio_check_eod() fails it silently "
        "(ab073abf6d97): fixed"
    )


def test_makefile_version_with_extraversion() -> None:
    text = "VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 0\nEXTRAVERSION = -rc7\n"
    assert source_check.makefile_version(text) == "7.3.0-rc7"
    assert source_check.makefile_version("all:\n") == ""


# --- nvmf-harness check-source ----------------------------------------------------------------


def test_cli_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from harness.cli import main

    tree = tree_copy(tmp_path, "debian-7.3.4")
    revert_fix(tree)
    assert main(["check-source", str(tree)]) == 0
    assert capsys.readouterr().out.strip().endswith(": affected (silently)")
    assert main(["check-source", "--json", str(tree)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["fix"], data["eod_shape"], data["prediction"]) == (
        False,
        "fail-silently",
        "affected (silently)",
    )


def test_cli_reads_a_tarball(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from harness.cli import main

    tree = tree_copy(tmp_path / "src", "debian-6.1.176")
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tree.parent), tree.name], check=True, timeout=60
    )
    assert main(["check-source", str(tarball)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("linux 6.1.176: fix absent") and line.endswith(": not affected")


def test_cli_unknown_shape_is_one_line_and_no_prediction(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from harness.cli import main

    tree = tree_copy(tmp_path, "debian-7.3.4")
    edit(tree, BLK_CORE, "if (nr_sectors &&\n", "if (nr_sectors > 0 &&\n")
    assert main(["check-source", str(tree)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no prediction" in out[0]
    assert main(["check-source", "--json", str(tree)]) == 1
    assert json.loads(capsys.readouterr().out)["prediction"] is None


def test_cli_not_a_source_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from harness.cli import main

    assert main(["check-source", str(tmp_path)]) == 2
    assert main(["check-source", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("nvmf-harness: error: ") for line in err)
