"""``guardrails policy ...``: validate, lint, test, explain, edit, show, replay and diff policies.

Exit codes follow the CLI's convention: 0 success, 1 a negative result (tests failed, lint
errors, a diff that is not empty), 2 input errors (a policy or test file that does not load,
a bad edit, an unreachable audit store). Edits write nothing unless the edited policy
validates as a whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from guardrails.cli.app import policy_app
from guardrails.cli.common import (
    AuditOption,
    JsonOption,
    PolicyOption,
    err,
    fail,
    load_policy_or_exit,
    out,
    progress_bar,
    read_text_argument,
    setup_cli_logging,
)
from guardrails.decision import Stage
from guardrails.exceptions import PolicyError
from guardrails.policy import Policy, load_policy, policy_json_schema_text

FilesArgument = Annotated[
    list[str] | None, typer.Argument(help="Policy files (default: the shipped default).")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the diff and write nothing.")]


def _load_all(files: list[str]) -> tuple[list[Policy], list[PolicyError]]:
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    for file in files or ["default"]:
        try:
            policies.append(load_policy(file))
        except PolicyError as exc:
            errors.append(exc)
    return policies, errors


def _print_problems(exc: PolicyError) -> None:
    for problem in exc.problems:
        err.print(f"[red]error[/] {problem}", markup=True, highlight=False)


@policy_app.command("validate")
def validate(files: FilesArgument = None, as_json: JsonOption = False) -> None:
    """Validate policy files; every problem is reported with file:line:column and rule id."""
    setup_cli_logging()
    policies, errors = _load_all(files or [])
    if as_json:
        problems = [
            {
                "file": p.file,
                "line": p.line,
                "column": p.column,
                "rule_id": p.rule_id,
                "message": p.message,
            }
            for exc in errors
            for p in exc.problems
        ]
        valid = [
            {
                "file": p.path,
                "name": p.name,
                "version": p.version,
                "digest": p.digest,
                "rules": len(p.rules),
            }
            for p in policies
        ]
        out.print_json(json.dumps({"valid": valid, "problems": problems}, ensure_ascii=False))
    else:
        for policy in policies:
            out.print(
                f"[green]ok[/] {policy.path}: {policy.ref.header()},"
                f" {len(policy.rules)} rules, {len(policy.model.tests)} tests"
            )
        for exc in errors:
            _print_problems(exc)
    raise typer.Exit(1 if errors else 0)


@policy_app.command("test")
def run_tests(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Policy files (their inline tests) and test files (policy: + tests:);"
            " default: the shipped default."
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", "-p", help="Run test files against this policy instead."),
    ] = None,
    match: Annotated[
        str | None, typer.Option("--match", "-k", help="Only cases whose name contains this.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List passing cases too.")
    ] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write a JUnit XML report for CI.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run inline tests and test files like a test runner: one line per case, a diff of
    expected against actual for each failure. Exit 0 all pass, 1 a failure, 2 a file that
    does not load."""
    setup_cli_logging()
    from guardrails.policy.suite import load_suite, run_suite

    suites = []
    load_errors = []
    for file in files or ["default"]:
        try:
            suites.append(load_suite(file, policy=policy))
        except PolicyError as exc:
            load_errors.append(exc)
    for problem in load_errors:
        _print_problems(problem)
    if load_errors:
        raise typer.Exit(2)
    reports = [report for suite in suites for report in run_suite(suite, match=match)]
    failed = [r for r in reports if not r.passed]
    if junit is not None:
        _write_junit(junit, reports)
    if as_json:
        payload = {
            "passed": len(reports) - len(failed),
            "failed": len(failed),
            "results": [
                {
                    "file": r.source,
                    "line": r.line,
                    "test": r.result.label,
                    "passed": r.passed,
                    "expected": r.result.test.expect.value,
                    "actual": r.result.verdict.action.value,
                    "rules": sorted(r.result.actual_rules),
                    "diff": r.diff(),
                }
                for r in reports
            ],
        }
        out.print_json(json.dumps(payload, ensure_ascii=False))
    else:
        for report in reports:
            if report.passed:
                if verbose:
                    out.print(f"[green]PASS[/] {report.where} {report.result.label}")
                continue
            out.print(f"[red]FAIL[/] {report.where} {report.result.label}")
            out.print(Text("     " + report.result.explain()))
            for line in report.diff():
                style = "red" if "- " in line[:10] else "green" if "+ " in line[:10] else "yellow"
                out.print(Text("     " + line, style=style))
        summary = f"{len(reports) - len(failed)} passed, {len(failed)} failed"
        out.print(f"[{'red' if failed else 'green'}]{summary}[/] ({len(suites)} files)")
    raise typer.Exit(1 if failed else 0)


def _write_junit(path: Path, reports: list[Any]) -> None:
    """One ``testsuite`` per file, one ``testcase`` per case, the diff in each failure."""
    from xml.etree import ElementTree

    root = ElementTree.Element("testsuites", name="guardrails policy test")
    by_source: dict[str, list[Any]] = {}
    for report in reports:
        by_source.setdefault(report.source, []).append(report)
    for source, items in by_source.items():
        failures = sum(not r.passed for r in items)
        suite = ElementTree.SubElement(
            root, "testsuite", name=source, tests=str(len(items)), failures=str(failures)
        )
        for report in items:
            case = ElementTree.SubElement(
                suite, "testcase", name=report.result.label, classname=report.where
            )
            if not report.passed:
                failure = ElementTree.SubElement(case, "failure", message=report.result.explain())
                failure.text = "\n".join(report.diff())
    try:
        ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        fail(f"cannot write {path}: {exc}")


@policy_app.command("explain")
def explain(
    text: Annotated[str, typer.Argument(help="Text to explain, or - to read standard input.")],
    stage: Annotated[
        Stage, typer.Option("--stage", "-s", help="input (prompt) or output.")
    ] = Stage.INPUT,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show which rules fire on TEXT, with the spans highlighted, what each matched and why
    the rule exists. Exit 0 whatever the verdict (see `guardrails check` for a gate)."""
    setup_cli_logging()
    from guardrails.cli.check_commands import print_verdict, verdict_json
    from guardrails.guard import Guard

    value = read_text_argument(text)
    loaded = load_policy_or_exit(policy)
    verdict = Guard(loaded).check(value, stage)
    rules = {rule.id: rule for rule in loaded.rules}
    if as_json:
        payload = verdict_json(verdict)
        for finding in payload["findings"]:
            span = finding["span"]
            finding["matched"] = value[span[0] : span[1]] if span else None
            rule = rules.get(str(finding["rule_id"]))
            finding["description"] = rule.description if rule else ""
        out.print_json(json.dumps(payload, ensure_ascii=False))
        return
    print_verdict(verdict, value)
    for finding in verdict.findings:
        rule = rules.get(finding.rule_id)
        matched = value[finding.span.start : finding.span.end] if finding.span else ""
        line = Text(f"  {finding.rule_id}: ")
        line.append(repr(matched), style="bold")
        if rule is not None and rule.description:
            line.append(f"  ({rule.description})", style="dim")
        out.print(line)
    if not verdict.findings:
        out.print(f"no rule of {loaded.ref.header()} fires on this {stage.value}")


@policy_app.command("lint")
def lint(
    files: FilesArgument = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Catch what validation cannot: backtracking-prone patterns, untested and shadowed
    rules, duplicate ids and matchers, keywords that fire on everyday text. Exit 1 on an
    error (or, with --strict, a warning)."""
    setup_cli_logging()
    from guardrails.policy.lint import LintLevel, lint_policy

    findings = [f for file in files or ["default"] for f in lint_policy(file)]
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "code": f.code,
                        "level": f.level.value,
                        "file": f.file,
                        "line": f.line,
                        "rule_id": f.rule_id,
                        "message": f.message,
                    }
                    for f in findings
                ],
                ensure_ascii=False,
            )
        )
    else:
        for finding in findings:
            style = "red" if finding.level is LintLevel.ERROR else "yellow"
            out.print(Text(str(finding), style=style))
        errors = sum(f.level is LintLevel.ERROR for f in findings)
        out.print(f"{errors} errors, {len(findings) - errors} warnings")
    failing = [f for f in findings if strict or f.level is LintLevel.ERROR]
    raise typer.Exit(1 if failing else 0)


@policy_app.command("show")
def show(
    file: Annotated[str, typer.Argument(help="Policy file or shipped pack name.")] = "default",
    resolved: Annotated[
        bool,
        typer.Option("--resolved", help="The effective policy: bases layered in, defaults shown."),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="The effective policy as JSON (implies --resolved).")
    ] = False,
) -> None:
    """Print a policy: the file as written, or (--resolved) the effective policy as YAML."""
    loaded = load_policy_or_exit(file)
    if json_output:
        import json

        doc = loaded.model.model_dump(mode="json", by_alias=True, exclude={"extends", "tests"})
        doc["digest"] = loaded.digest
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    if not resolved:
        typer.echo(Path(loaded.path).read_text(encoding="utf-8"), nl=False)
        return
    from ruamel.yaml import YAML

    data = loaded.model.model_dump(mode="json", by_alias=True, exclude={"extends", "tests"})
    data.pop("$schema", None)
    data = {
        **data,
        "rules": [
            {k: v for k, v in rule.items() if v is not None} for rule in data.get("rules", [])
        ],
    }
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096
    typer.echo(f"# resolved policy {loaded.ref.header()} (from {loaded.path})")
    yaml.dump(data, sys.stdout)


def _finish_edit(run: Any, dry_run: bool) -> None:
    """Run an edit, report it (a diff when dry), and exit 2 on a rejected edit."""
    from guardrails.policy.edit import PolicyEdit

    try:
        edit: PolicyEdit = run(write=not dry_run)
    except PolicyError as exc:
        _print_problems(exc)
        err.print("[red]nothing written[/]")
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(edit.diff(), nl=False)
        err.print(f"dry run: {edit.summary}; nothing written")
    elif edit.changed:
        err.print(f"[green]updated[/] {edit.path}: {edit.summary} ({edit.policy.ref.header()})")
    else:
        err.print(f"{edit.path}: already so, nothing changed")


@policy_app.command("set")
def set_field(
    file: Annotated[Path, typer.Argument(help="Policy file to edit.")],
    key: Annotated[str, typer.Argument(help="settings.audit.store, rules[pii.email].action, ...")],
    value: Annotated[str, typer.Argument(help="New value, read as YAML (true, 3, [a, b]).")],
    string: Annotated[bool, typer.Option("--string", help="Take VALUE as text, not YAML.")] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Set one field in place; comments and formatting are kept, the result validated first."""
    from guardrails.policy.edit import parse_value, set_value

    parsed = value if string else parse_value(value)
    _finish_edit(lambda write: set_value(file, key, parsed, write=write), dry_run)


@policy_app.command("enable")
def enable(
    file: Annotated[Path, typer.Argument(help="Policy file to edit.")],
    rule_id: Annotated[str, typer.Argument(help="Rule id (a base's rule gets an overlay).")],
    dry_run: DryRunOption = False,
) -> None:
    """Enable a rule."""
    from guardrails.policy.edit import set_enabled

    _finish_edit(lambda write: set_enabled(file, rule_id, True, write=write), dry_run)


@policy_app.command("disable")
def disable(
    file: Annotated[Path, typer.Argument(help="Policy file to edit.")],
    rule_id: Annotated[str, typer.Argument(help="Rule id (a base's rule gets an overlay).")],
    dry_run: DryRunOption = False,
) -> None:
    """Disable a rule (it stays in the file, and in review diffs)."""
    from guardrails.policy.edit import set_enabled

    _finish_edit(lambda write: set_enabled(file, rule_id, False, write=write), dry_run)


@policy_app.command("add-rule")
def add_rule_command(
    file: Annotated[Path, typer.Argument(help="Policy file to edit.")],
    rule: Annotated[
        str,
        typer.Argument(
            help="The rule as YAML ('{id: x, keywords: [y]}'), @FILE to read it, - for stdin."
        ),
    ],
    after: Annotated[
        str | None, typer.Option("--after", help="Insert after this rule (default: last).")
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Add a rule; it must validate (pattern compiles, known fields) or nothing is written."""
    from guardrails.policy.edit import add_rule

    if rule == "-":
        rule = read_text_argument("-")
    elif rule.startswith("@"):
        try:
            rule = Path(rule[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {rule[1:]}: {exc}")
    _finish_edit(lambda write: add_rule(file, rule, after=after, write=write), dry_run)


@policy_app.command("remove-rule")
def remove_rule_command(
    file: Annotated[Path, typer.Argument(help="Policy file to edit.")],
    rule_id: Annotated[str, typer.Argument(help="Rule id declared in FILE.")],
    dry_run: DryRunOption = False,
) -> None:
    """Remove a rule this file declares (tests that name it must go first)."""
    from guardrails.policy.edit import remove_rule

    _finish_edit(lambda write: remove_rule(file, rule_id, write=write), dry_run)


def _open_store(audit: str | None) -> Any:
    from audit import AuditStore, default_audit_url

    url = audit or default_audit_url()
    try:
        return AuditStore(url)
    except Exception as exc:
        fail(f"cannot open the audit store {url}: {exc}")


@policy_app.command("replay")
def replay_command(
    candidate: Annotated[str, typer.Argument(help="Candidate policy file or pack name.")],
    audit: AuditOption = None,
    since: Annotated[str, typer.Option("--since", help="7d, 24h, 30m, 2w or an ISO date.")] = "7d",
    until: Annotated[str | None, typer.Option("--until", help="Same forms as --since.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's traffic.")] = None,
    limit: Annotated[int, typer.Option(help="Read at most this many events.")] = 10_000,
    examples: Annotated[int, typer.Option(help="Examples kept per rule.")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Run CANDIDATE over stored traffic and report what would change: newly blocked, newly
    allowed, per rule, with examples. Events stored as hashes cannot be replayed; redacted
    ones are replayed except for the spans their policy hid."""
    setup_cli_logging()
    from guardrails.policy.replay import parse_since, replay

    loaded = load_policy_or_exit(candidate)
    try:
        start = parse_since(since)
        end = parse_since(until) if until else None
    except ValueError as exc:
        fail(str(exc))
    store = _open_store(audit)
    try:
        with progress_bar("replaying", None) as advance:
            report = replay(
                loaded,
                store,
                since=start,
                until=end,
                tenant=tenant,
                limit=limit,
                examples=examples,
                progress=advance,
            )
    except Exception as exc:
        fail(f"replay failed: {exc}")
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    out.print(
        f"replayed {report.candidate} over {report.events_read} events since {start:%Y-%m-%d %H:%M}"
        f" UTC ({report.stages_replayed} checks)"
        + (" [yellow]-- limit reached, later events not read[/]" if report.limit_reached else "")
    )
    if report.skipped_hash:
        out.print(f"[yellow]{report.skipped_hash} events stored as hashes: not replayable[/]")
    if report.partial:
        out.print(
            f"{report.partial} redacted events: spans hidden at storage kept their recorded"
            " findings"
        )
    out.print(
        f"[bold]{report.changed} changed[/]: [red]{report.newly_blocked_count} newly blocked[/],"
        f" [green]{report.newly_allowed_count} newly allowed[/]"
    )
    for (before, after), count in sorted(report.transitions.items()):
        out.print(f"  {before} -> {after}: {count}")
    if report.unknown_output:
        out.print(f"  ({report.unknown_output} newly allowed prompts: their output is unknown)")
    for title, items in (("newly blocked", report.newly_blocked),
                         ("newly allowed", report.newly_allowed)):  # fmt: skip
        for example in items:
            out.print(Text(f"  {title} {example.request_id} {example.stage.value}: "))
            out.print(Text(f"    {example.text}", style="dim"))
    for change in sorted(report.rules.values(), key=lambda c: c.rule_id):
        out.print(
            f"rule {change.rule_id}: +{change.newly_fired} newly fires,"
            f" -{change.stopped_firing} no longer fires"
        )
        for example in change.examples:
            out.print(
                Text(
                    f"    {example.request_id} {example.stage.value} {example.before}->"
                    f"{example.after}: {example.text}",
                    style="dim",
                )
            )


@policy_app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="Old version: file, pack name, or stored digest.")],
    b: Annotated[str, typer.Argument(help="New version: file, pack name, or stored digest.")],
    audit: AuditOption = None,
    as_json: JsonOption = False,
) -> None:
    """A semantic diff of two resolved policies: rules added, removed, changed field by
    field, settings changed. Exit 0 when they mean the same, 1 when they differ."""
    setup_cli_logging()
    from guardrails.policy.diff import diff_policies, load_policy_version, looks_like_digest

    store = (
        _open_store(audit)
        if any(looks_like_digest(x) and not Path(x).exists() for x in (a, b))
        else None
    )
    try:
        old = load_policy_version(a, store=store)
        new = load_policy_version(b, store=store)
    except PolicyError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    finally:
        if store is not None:
            store.close()
    result = diff_policies(old, new, a_label=a, b_label=b)
    if as_json:
        out.print_json(json.dumps(result.to_dict(), ensure_ascii=False))
        raise typer.Exit(0 if result.empty else 1)
    out.print(f"--- {a} ({old.ref.header()})\n+++ {b} ({new.ref.header()})")
    for change in result.header:
        out.print(Text(f"~ {change.path}: {change.before!r} -> {change.after!r}", style="yellow"))
    for change in result.settings:
        out.print(
            Text(f"~ settings.{change.path}: {change.before!r} -> {change.after!r}", style="yellow")
        )
    for rule_id in result.added:
        out.print(Text(f"+ rule {rule_id}", style="green"))
    for rule_id in result.removed:
        out.print(Text(f"- rule {rule_id}", style="red"))
    for rule_id, fields in result.changed:
        out.print(Text(f"~ rule {rule_id}", style="yellow"))
        for change in fields:
            out.print(Text(f"    {change.path}: {change.before!r} -> {change.after!r}"))
    if result.tests[0] != result.tests[1]:
        out.print(f"  inline tests: {result.tests[0]} -> {result.tests[1]}")
    if result.empty:
        out.print("no semantic differences")
    raise typer.Exit(0 if result.empty else 1)


@policy_app.command("schema")
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of policy files, for editors."""
    text = policy_json_schema_text()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    err.print(f"wrote {output}")


__all__ = [
    "DryRunOption",
    "FilesArgument",
    "add_rule_command",
    "diff_command",
    "disable",
    "enable",
    "explain",
    "lint",
    "remove_rule_command",
    "replay_command",
    "run_tests",
    "schema",
    "set_field",
    "show",
    "validate",
]
