"""What a kernel source says about the race: the fix, the shape of ``bio_check_eod()``, and
so a prediction (``nvmf-harness check-source DIR``; the matrix uses the same code).

Two pieces of code decide whether a bio that the multipath head remapped to a per-path disk
whose capacity ``nvme_ns_remove()`` already zeroed fails with EIO:

- the fix, upstream 88bac2c1a72b "nvme-multipath: set BIO_REMAPPED on bios remapped to
  per-path namespace disks" (v7.2; stable 6.18.39, 6.12.96, 6.1.178):
  ``drivers/nvme/host/multipath.c:nvme_ns_head_submit_bio()`` sets ``BIO_REMAPPED`` after
  ``bio_set_dev()``, so ``submit_bio_noacct()`` skips ``bio_check_eod()`` for the remapped bio;
- the shape of ``block/blk-core.c:bio_check_eod()`` (in the image, not in a module), one of
  :class:`EodShape`:

  ==================  ======================================================  ==============
  shape               condition                                               kernels
  ==================  ======================================================  ==============
  skip zero size      ``if (nr_sectors && maxsector && (...))``: a disk of    before v6.4;
                      capacity 0 passes                                       v6.17-rc3..rc7
                                                                              (d0a2b527d8c3)
  fail with a line    ``if (nr_sectors && (...)) { pr_info_ratelimited(...);  v6.4..v6.16
                      return -EIO; }``                                        (3eb96946f0be)
  fail silently       the same, with ``if (!maxsector) return -EIO;`` before  v6.17 and later
                      the print: no kernel line                               (ab073abf6d97)
  ==================  ======================================================  ==============

A source with the fix is ``fixed``; without it, the shape decides: ``not affected``,
``affected (with a line)`` or ``affected (silently)``. A function this module does not
recognise raises :class:`UnknownSource` with one line saying what it found: never a guess.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.core.errors import ToolError, UsageError
from harness.core.procs import run

FIX_COMMIT = "88bac2c1a72b"
FIX_SUBJECT = "nvme-multipath: set BIO_REMAPPED on bios remapped to per-path namespace disks"
FIX_STATEMENT = "bio_set_flag(bio, BIO_REMAPPED);"
SET_DEV_STATEMENT = "bio_set_dev(bio, ns->disk->part0);"
SUBMIT_FUNCTION = "static void nvme_ns_head_submit_bio(struct bio *bio)"
EOD_FUNCTION = "bio_check_eod(struct bio *bio)"
BLK_CORE = "block/blk-core.c"
MULTIPATH_C = "drivers/nvme/host/multipath.c"
TOP_MAKEFILE = "Makefile"
# The upstream commit behind each shape, for output and docstrings.
SKIP_ZERO_SIZE_COMMITS = "before 3eb96946f0be (v6.4); d0a2b527d8c3 (v6.17-rc3)"
LINE_COMMIT = "3eb96946f0be"
SILENT_COMMIT = "ab073abf6d97"


class EodShape(StrEnum):
    """The shape of ``block/blk-core.c:bio_check_eod()`` (see the module docstring)."""

    SKIP_ZERO_SIZE = "skip-zero-size"
    FAIL_WITH_LINE = "fail-with-line"
    FAIL_SILENTLY = "fail-silently"


class Prediction(StrEnum):
    """What a kernel built from the source does in the race, as shipped."""

    NOT_AFFECTED = "not affected"
    AFFECTED_WITH_LINE = "affected (with a line)"
    AFFECTED_SILENTLY = "affected (silently)"
    FIXED = "fixed"


class UnknownSource(ToolError):
    """The source has a shape this module does not know (the message says what it found)."""


SHAPE_WORDS: dict[EodShape, str] = {
    EodShape.SKIP_ZERO_SIZE: "skips a zero-size disk",
    EodShape.FAIL_WITH_LINE: "fails it with a line",
    EodShape.FAIL_SILENTLY: "fails it silently",
}
SHAPE_COMMITS: dict[EodShape, str] = {
    EodShape.SKIP_ZERO_SIZE: SKIP_ZERO_SIZE_COMMITS,
    EodShape.FAIL_WITH_LINE: LINE_COMMIT,
    EodShape.FAIL_SILENTLY: SILENT_COMMIT,
}


def function_body(source: str, signature: str, where: str) -> str:
    """The text of the C function whose definition contains ``signature``, up to the first
    ``}`` in column 0 after it. Raises UnknownSource naming ``where`` when it is not there."""
    start = source.find(signature)
    if start < 0:
        raise UnknownSource(
            f"{where}: no {signature.split('(', maxsplit=1)[0].rsplit(maxsplit=1)[-1]}()"
        )
    end = source.find("\n}\n", start)
    return source[start : end + 3 if end >= 0 else len(source)]


def _squeeze(code: str) -> str:
    """C code without comments, whitespace runs as one space."""
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.DOTALL)
    code = re.sub(r"//[^\n]*", " ", code)
    return re.sub(r"\s+", " ", code).strip()


def has_fix(multipath_c: str, where: str = MULTIPATH_C) -> bool:
    """Whether ``nvme_ns_head_submit_bio()`` sets BIO_REMAPPED on the bio it remaps (the fix).

    Raises UnknownSource when the function does not remap with ``bio_set_dev()`` and
    ``submit_bio_noacct()`` (a multipath that no longer has the race's shape)."""
    body = _squeeze(function_body(multipath_c, SUBMIT_FUNCTION, where))
    if SET_DEV_STATEMENT not in body or "submit_bio_noacct(bio);" not in body:
        raise UnknownSource(
            f"{where}: nvme_ns_head_submit_bio() does not remap with "
            f"'{SET_DEV_STATEMENT}' and submit_bio_noacct(): a shape this harness does not know"
        )
    return FIX_STATEMENT in body


def eod_shape(blk_core_c: str, where: str = BLK_CORE) -> EodShape:
    """The shape of ``bio_check_eod()`` in the text of block/blk-core.c.

    Raises UnknownSource, with the condition it found, for any other shape."""
    body = _squeeze(function_body(blk_core_c, EOD_FUNCTION, where))
    condition = re.search(r"if \( ?nr_sectors && (.*?)\) ?\{", body)
    if condition is None:
        raise UnknownSource(f"{where}: bio_check_eod() has no 'if (nr_sectors && ...)' check")
    rest = condition.group(1)
    if re.match(r"maxsector && \(", rest):
        return EodShape.SKIP_ZERO_SIZE
    if not re.match(r"\( ?nr_sectors > maxsector \|\|", rest):
        raise UnknownSource(f"{where}: bio_check_eod() checks 'nr_sectors && {rest[:60]}'")
    block = body[condition.end() :]
    printed = block.find("pr_info_ratelimited(")
    silent = re.search(r"if \( ?!maxsector ?\) return -EIO;", block)
    if printed < 0:
        raise UnknownSource(f"{where}: bio_check_eod() fails a bio without pr_info_ratelimited()")
    if silent is None:
        return EodShape.FAIL_WITH_LINE
    if silent.start() < printed:
        return EodShape.FAIL_SILENTLY
    raise UnknownSource(f"{where}: bio_check_eod() tests !maxsector after its print")


def predict(fix: bool, shape: EodShape) -> Prediction:
    """The prediction for a source with (or without) the fix and this ``bio_check_eod()``."""
    if fix:
        return Prediction.FIXED
    return {
        EodShape.SKIP_ZERO_SIZE: Prediction.NOT_AFFECTED,
        EodShape.FAIL_WITH_LINE: Prediction.AFFECTED_WITH_LINE,
        EodShape.FAIL_SILENTLY: Prediction.AFFECTED_SILENTLY,
    }[shape]


def makefile_version(makefile: str) -> str:
    """``6.1.170`` (or ``7.3.0-rc7`` with an EXTRAVERSION) from the top Makefile; ``""`` when
    it has no VERSION/PATCHLEVEL/SUBLEVEL."""
    values: dict[str, str] = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        match = re.search(rf"^{key}\s*=[ \t]*(\S*)[ \t]*$", makefile, re.MULTILINE)
        values[key] = match.group(1) if match else ""
    if not all(values[k].isdigit() for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL")):
        return ""
    return (
        f"{values['VERSION']}.{values['PATCHLEVEL']}.{values['SUBLEVEL']}{values['EXTRAVERSION']}"
    )


@dataclass(frozen=True)
class SourceCheck:
    """What one kernel source says (``check-source --json`` prints :meth:`to_dict`)."""

    source: str  # the directory or tarball read
    version: str  # from the top Makefile, "" when it has none
    fix: bool
    eod_shape: EodShape
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        """``source``, ``version``, ``fix``, ``eod_shape``, ``prediction`` and the upstream
        commits behind them (``fix_commit``, ``eod_commit``)."""
        return {
            "source": self.source,
            "version": self.version,
            "fix": self.fix,
            "fix_commit": FIX_COMMIT,
            "eod_shape": str(self.eod_shape),
            "eod_commit": SHAPE_COMMITS[self.eod_shape],
            "prediction": str(self.prediction),
        }

    def describe(self) -> str:
        """One line: ``linux 7.3.4: fix absent (88bac2c1a72b); bio_check_eod() fails it
        silently (ab073abf6d97): affected (silently)``."""
        fix = "present" if self.fix else "absent"
        name = f"linux {self.version}" if self.version else self.source
        return (
            f"{name}: fix {fix} ({FIX_COMMIT}); bio_check_eod() {SHAPE_WORDS[self.eod_shape]} "
            f"({SHAPE_COMMITS[self.eod_shape]}): {self.prediction}"
        )


def check_texts(source: str, makefile: str, blk_core_c: str, multipath_c: str) -> SourceCheck:
    """The check of a source given the text of its three files. Raises UnknownSource."""
    fix = has_fix(multipath_c)
    shape = eod_shape(blk_core_c)
    return SourceCheck(source, makefile_version(makefile), fix, shape, predict(fix, shape))


EXTRACT_TIMEOUT_S = 300.0
SOURCE_HINT = "give the top directory of a kernel tree or a linux-source-X.Y tarball"


def check_tree(tree: Path, source: str = "") -> SourceCheck:
    """The check of an extracted kernel source tree (a git work tree, an unpacked tarball);
    ``source`` names it in the result (default: ``tree``).

    Raises UsageError when ``tree`` is not a kernel source (one of the three files is
    missing), UnknownSource when a function has a shape this module does not know."""
    texts = []
    for name in (TOP_MAKEFILE, BLK_CORE, MULTIPATH_C):
        try:
            texts.append((tree / name).read_text(errors="replace"))
        except OSError as exc:
            raise UsageError(
                f"{source or tree} is not a kernel source tree ({name}: {exc.strerror})",
                hint=SOURCE_HINT,
            ) from exc
    return check_texts(source or str(tree), *texts)


def check_tarball(tarball: Path) -> SourceCheck:
    """The check of a source tarball (``linux-source-7.3.tar.xz``, ``linux-7.3.tar.gz``):
    only its three files are extracted, into a temporary directory. Raises UsageError when
    tar cannot read them, UnknownSource like :func:`check_tree`."""
    with tempfile.TemporaryDirectory(prefix="nvmf-source-check-") as tmp:
        argv = ["tar", "-xf", str(tarball), "-C", tmp, "--wildcards"]
        argv += ["--no-wildcards-match-slash", f"*/{TOP_MAKEFILE}"]
        argv += [f"*/{BLK_CORE}", f"*/{MULTIPATH_C}"]
        result = run(argv, timeout_s=EXTRACT_TIMEOUT_S)
        tops = [p.parent for p in Path(tmp).glob(f"*/{TOP_MAKEFILE}")]
        if not result.ok or len(tops) != 1:
            raise UsageError(
                f"{tarball}: no kernel source in it ({result.one_line_error() or 'no Makefile'})",
                hint=SOURCE_HINT,
            )
        return check_tree(tops[0], str(tarball))


def check_source(path: Path) -> SourceCheck:
    """:func:`check_tree` for a directory, :func:`check_tarball` for a file. Raises
    UsageError when ``path`` is neither."""
    if path.is_dir():
        return check_tree(path)
    if path.is_file():
        return check_tarball(path)
    raise UsageError(f"{path}: no such directory or file", hint=SOURCE_HINT)
