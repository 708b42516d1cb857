"""``guardrails policy ...``: validate, test and export policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from guardrails.cli.app import policy_app
from guardrails.cli.common import JsonOption, err, fail, out, setup_cli_logging
from guardrails.exceptions import PolicyError
from guardrails.policy import Policy, load_policy, policy_json_schema_text


def _load_all(files: list[str]) -> tuple[list[Policy], list[PolicyError]]:
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    for file in files or ["default"]:
        try:
            policies.append(load_policy(file))
        except PolicyError as exc:
            errors.append(exc)
    return policies, errors


@policy_app.command("validate")
def validate(
    files: Annotated[
        list[str] | None, typer.Argument(help="Policy files (default: the shipped default).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
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
            for problem in exc.problems:
                err.print(f"[red]error[/] {problem}")
    raise typer.Exit(1 if errors else 0)


@policy_app.command("test")
def run_tests(
    files: Annotated[
        list[str] | None, typer.Argument(help="Policy files (default: the shipped default).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List passing tests too.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the inline tests of policy files. Exit 0 when all pass, 1 on a failure, 2 when a
    policy does not load."""
    setup_cli_logging()
    from guardrails.testing import run_policy_tests

    policies, errors = _load_all(files or [])
    for exc in errors:
        for problem in exc.problems:
            err.print(f"[red]error[/] {problem}")
    if errors:
        raise typer.Exit(2)
    failed = 0
    report = []
    for policy in policies:
        results = run_policy_tests(policy)
        for result in results:
            report.append(
                {
                    "policy": policy.path,
                    "test": result.label,
                    "passed": result.passed,
                    "detail": result.explain(),
                }
            )
            if not result.passed:
                failed += 1
                if not as_json:
                    out.print(
                        f"[red]FAIL[/] {policy.path} :: {result.label}\n     {result.explain()}"
                    )
            elif verbose and not as_json:
                out.print(f"[green]pass[/] {policy.path} :: {result.label}")
        if not as_json:
            passed = sum(r.passed for r in results)
            out.print(f"{policy.path}: {passed}/{len(results)} passed")
    if as_json:
        out.print_json(json.dumps({"failed": failed, "results": report}, ensure_ascii=False))
    raise typer.Exit(1 if failed else 0)


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
