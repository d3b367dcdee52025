"""One report from the jobs of a CI matrix (one job per kernel and scenario).

Each job runs ``scripts/nightly --scenario S K`` and uploads its nightly directory, which
holds ``<release>/kcidb.json`` and ``<release>/status.json`` (harness/nightly.py). The last
job downloads them all and runs ``nvmf-harness report --merge DIR... --out OUT``, which
writes to OUT:

- ``kcidb.json``: every job's KCIDB document merged by ``kcidb-io`` (``merge``, then
  ``dedup``: an object two jobs both sent, such as the checkout of a kernel tested in two
  scenarios, is kept once, with the first job's fields), validated like the per-job ones
  (harness/kcidb.py);
- ``status.json``: the worst exit over all jobs (0 pass, 1 regression, 2 infrastructure: the
  rule of harness/nightly.py), and each job's kernels with their status and reasons;
- ``summary.txt`` and ``summary.html``: one row per job and kernel.

A job directory without any ``<release>/status.json`` (the job died before writing one, or
its artifact is empty) counts as an infrastructure failure of that job. Errors: HarnessError
(one line) for a DIR that does not exist, a per-job kcidb.json that is not JSON, not valid
KCIDB or of a schema newer than ours, and for an invalid merged document.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.ci import nightly
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import read_json_object, write_json_atomic
from harness.report import kcidb

KCIDB_FILE = nightly.KCIDB_FILE
STATUS_FILE = nightly.STATUS_FILE
SUMMARY_TEXT = "summary.txt"
SUMMARY_HTML = "summary.html"
COUNT_KEYS = (kcidb.PASS, kcidb.FAIL, kcidb.ERROR, kcidb.SKIP)


@dataclass(frozen=True)
class KernelRow:
    """One kernel of one job, from its status.json (``exit``: 0/1/3, ExitCode)."""

    release: str
    exit: int
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    judgement: str = ""  # the scenario verdict (pass, regression, inconclusive, ...), if any
    report: str = ""  # the kernel's report.html relative to the job directory, if there

    @property
    def status(self) -> str:
        return nightly.STATUS_NAMES[self.exit]


@dataclass(frozen=True)
class JobResult:
    """One matrix job: its directory, its kernels, and its exit (the worst of its kernels;
    infrastructure when it left no status.json)."""

    name: str
    directory: Path
    kernels: list[KernelRow]
    exit: int
    problem: str = ""  # why the job counts as infrastructure without a kernel row

    @property
    def status(self) -> str:
        return nightly.STATUS_NAMES[self.exit]


@dataclass(frozen=True)
class MergeResult:
    """What ``merge`` wrote: the worst exit, the jobs, and the merged document's counts."""

    exit: int
    jobs: list[JobResult]
    objects: dict[str, int]  # KCIDB list name -> objects in the merged document
    outdir: Path

    @property
    def status(self) -> str:
        return nightly.STATUS_NAMES[self.exit]


def read_job(directory: Path, name: str = "") -> JobResult:
    """The kernels of one job directory (``<release>/status.json`` one level down);
    ``name``: how the summaries call the job (default: the directory's name)."""
    name = name or directory.name
    rows = []
    for path in sorted(directory.glob(f"*/{STATUS_FILE}")):
        rows.append(_kernel_row(path, directory))
    if not rows:
        problem = f"no <release>/{STATUS_FILE} in {directory} (the job died before its report?)"
        return JobResult(name, directory, [], ExitCode.INFRA, problem)
    exit_code = nightly.overall_exit(row.exit for row in rows)
    return JobResult(name, directory, rows, exit_code)


def job_names(directories: Sequence[Path]) -> list[str]:
    """Each directory's path below their common parent (``6.1.0-57-amd64-smoke/nightly-7``
    for ``jobs/*/nightly-7``): the part that tells the jobs apart; a lone one: its name."""
    if len(directories) < 2:
        return [d.name for d in directories]
    resolved = [d.resolve() for d in directories]
    common = Path(os.path.commonpath(resolved))
    names = [r.relative_to(common).as_posix() for r in resolved]
    return [n if n != "." else r.name for n, r in zip(names, resolved, strict=True)]


def _kernel_row(path: Path, job_dir: Path) -> KernelRow:
    data = read_json_object(path)
    exit_code = data.get("exit")
    release = str(data.get("release") or path.parent.name)
    if exit_code not in nightly.STATUS_NAMES:
        return KernelRow(release, ExitCode.INFRA, [f"{path} unreadable or without an exit"])
    scenario = data.get("scenario")
    counts = data.get("counts")
    report = path.parent / "report.html"
    return KernelRow(
        release=release,
        exit=int(exit_code),
        reasons=[str(r) for r in data.get("reasons", [])],
        notes=[str(n) for n in data.get("notes", [])],
        counts={str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {},
        judgement=str(scenario.get("judgement", "")) if isinstance(scenario, dict) else "",
        report=report.relative_to(job_dir).as_posix() if report.exists() else "",
    )


def read_documents(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``<release>/kcidb.json`` of a job directory, each checked by kcidb-io.

    Raises HarnessError naming the file when one is not JSON, not a valid KCIDB document
    or of a schema version newer than the one harness/kcidb.py writes."""
    documents = []
    for path in sorted(directory.glob(f"*/{KCIDB_FILE}")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(doc, dict) or not kcidb.SCHEMA.is_compatible(doc):
            version = doc.get("version") if isinstance(doc, dict) else None
            raise HarnessError(
                f"{path}: not a KCIDB document of schema {kcidb.SCHEMA} or older "
                f"(version {version!r})",
                hint="merge the outputs of jobs that ran this harness version",
            )
        try:
            kcidb.validate(doc)
        except HarnessError as exc:
            raise HarnessError(f"{path}: {exc.message}", hint=exc.hint) from None
        documents.append((path, doc))
    return documents


def merge_documents(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One KCIDB document of the latest schema from several: kcidb-io concatenates the
    lists (upgrading older versions) and drops duplicates by id, keeping the fields of the
    first object where two differ. The result is validated (HarnessError if it is not)."""
    merged = kcidb.SCHEMA.merge(kcidb.SCHEMA.new(), documents)
    deduped: dict[str, Any] = kcidb.SCHEMA.dedup(merged, copy=False, pick_second=lambda: False)
    return kcidb.validate(deduped)


def merge(directories: Sequence[Path], outdir: Path) -> MergeResult:
    """Read every job directory, write the merged kcidb.json, status.json and summaries to
    ``outdir``; return what was written. Raises HarnessError (one line) for a missing
    directory or a bad document (nothing is written then)."""
    if not directories:
        raise HarnessError("report --merge: no job directory given", hint="--merge DIR...")
    for directory in directories:
        if not directory.is_dir():
            raise HarnessError(
                f"{directory}: no such job directory",
                hint="give the downloaded artifact directories of the matrix jobs",
            )
    jobs = [read_job(d, name) for d, name in zip(directories, job_names(directories), strict=True)]
    documents = [doc for directory in directories for _, doc in read_documents(directory)]
    doc = merge_documents(documents)
    exit_code = nightly.overall_exit(job.exit for job in jobs)
    objects = {name: len(doc[name]) for name in kcidb.SCHEMA.graph if name and name in doc}
    result = MergeResult(exit_code, jobs, objects, outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    kcidb.write(outdir / KCIDB_FILE, doc)
    write_json_atomic(outdir / STATUS_FILE, status_dict(result))
    (outdir / SUMMARY_TEXT).write_text(render_text(result) + "\n", encoding="utf-8")
    (outdir / SUMMARY_HTML).write_text(render_html(result), encoding="utf-8")
    return result


def status_dict(result: MergeResult) -> dict[str, Any]:
    """status.json of the merged report."""
    return {
        "exit": result.exit,
        "status": result.status,
        "kcidb_objects": result.objects,
        "jobs": [
            {
                "name": job.name,
                "directory": str(job.directory),
                "exit": job.exit,
                "status": job.status,
                "problem": job.problem or None,
                "kernels": [{**asdict(row), "status": row.status} for row in job.kernels],
            }
            for job in result.jobs
        ],
    }


def _rows(result: MergeResult) -> list[tuple[JobResult, KernelRow | None]]:
    rows: list[tuple[JobResult, KernelRow | None]] = []
    for job in result.jobs:
        rows += [(job, row) for row in job.kernels] if job.kernels else [(job, None)]
    return rows


def render_text(result: MergeResult) -> str:
    """A plain table: job, kernel, status, scenario verdict, test counts, then the reasons."""
    width = max([len("job"), *(len(job.name) for job in result.jobs)])
    lines = [
        f"{'job':<{width}} {'kernel':<24} {'status':<10} {'scenario':<13} PASS FAIL ERROR SKIP"
    ]
    for job, row in _rows(result):
        if row is None:
            lines.append(f"{job.name:<{width}} {'-':<24} {job.status:<10} -")
            lines.append(f"    {job.problem}")
            continue
        c = row.counts
        lines.append(
            f"{job.name:<{width}} {row.release:<24} {row.status:<10} {row.judgement or '-':<13} "
            f"{c.get(kcidb.PASS, 0):>4} {c.get(kcidb.FAIL, 0):>4} {c.get(kcidb.ERROR, 0):>5} "
            f"{c.get(kcidb.SKIP, 0):>4}"
        )
        lines += [f"    {reason}" for reason in row.reasons[:10]]
        lines += [f"    note: {note}" for note in row.notes[:10]]
    objects = ", ".join(f"{n} {name}" for name, n in result.objects.items()) or "no objects"
    lines.append(
        f"merged: {result.status} (exit {result.exit}), {len(result.jobs)} job(s); "
        f"kcidb.json: {objects}"
    )
    return "\n".join(lines)


_COLORS = {"pass": "#1a7f37", "regression": "#cf222e", "infra": "#9a6700"}


def render_html(result: MergeResult) -> str:
    """A self-contained page: the overall status and one table row per job and kernel,
    linking each kernel's report.html inside the job directory (relative to OUT)."""
    esc = html.escape
    body = []
    for job, row in _rows(result):
        if row is None:
            cells = [esc(job.name), "-", _status_cell(job.status), "-", "", "", "", ""]
            detail = esc(job.problem)
        else:
            kernel = esc(row.release)
            if row.report:
                link = _relative_link(job.directory / row.report, result.outdir)
                kernel = f'<a href="{esc(link)}">{kernel}</a>'
            cells = [esc(job.name), kernel, _status_cell(row.status), esc(row.judgement or "-")]
            cells += [str(row.counts.get(k, 0)) for k in COUNT_KEYS]
            detail = "<br>".join(
                [esc(r) for r in row.reasons[:10]] + [f"note: {esc(n)}" for n in row.notes[:10]]
            )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in [*cells, detail]) + "</tr>")
    objects = ", ".join(f"{n} {esc(name)}" for name, n in result.objects.items()) or "none"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("job", "kernel", "status", "scenario", *COUNT_KEYS, "reasons and notes")
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<title>nvmf-harness nightly: merged report</title><style>"
        "body{font:14px/1.4 system-ui,sans-serif;margin:2em}"
        "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;"
        "text-align:left;vertical-align:top}th{background:#f6f8fa}"
        "</style></head><body>\n"
        f"<h1>Nightly: {_status_cell(result.status)} (exit {result.exit})</h1>\n"
        f"<p>{len(result.jobs)} job(s). kcidb.json: {objects}.</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
        "</body></html>\n"
    )


def _status_cell(status: str) -> str:
    return f'<b style="color:{_COLORS.get(status, "#000")}">{html.escape(status)}</b>'


def _relative_link(target: Path, outdir: Path) -> str:
    """``target`` relative to ``outdir`` (``../job/release/report.html``), else its URI."""
    try:
        return Path(os.path.relpath(target.resolve(), outdir.resolve())).as_posix()
    except ValueError:
        return target.resolve().as_uri()
