"""`huleedu cj ...`: the CJ commands (the platform CLI mounts `app` under `cj`)."""

import asyncio
import shlex
from pathlib import Path
from typing import Annotated

import typer

from huleedu.cj_assessment.evaluation import EvaluationSettings, evaluate
from huleedu.cj_assessment.evaluation_report import render_markdown
from huleedu.cj_assessment.pairing import Strategy

app = typer.Typer(help="Comparative judgement tools.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Comparative judgement tools."""


@app.command("evaluate")
def evaluate_command(
    n: Annotated[int, typer.Option(min=2, help="student essays per simulated batch")] = 30,
    discrimination: Annotated[
        float, typer.Option(min=0.0, help="the judge's Bradley-Terry discrimination")
    ] = 1.0,
    spread: Annotated[float, typer.Option(min=0.0, help="SD of the true qualities, logits")] = 1.5,
    position_bias: Annotated[float, typer.Option(help="logits in favour of the essay shown first")] = 0.2,
    lapse_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of coin-toss verdicts")] = 0.05,
    anchors: Annotated[bool, typer.Option(help="judge six graded anchors in the pool")] = True,
    repeats: Annotated[int, typer.Option(min=1, help="simulated batches per strategy")] = 100,
    strategies: Annotated[str, typer.Option(help="comma-separated pairing strategies")] = "random,adaptive",
    budgets: Annotated[str, typer.Option(help="comma-separated comparisons per essay to report")] = "5,10,20",
    sensitivity: Annotated[str, typer.Option(help="comma-separated extra true SDs to check")] = "",
    seed: Annotated[int, typer.Option(help="fixes every random draw")] = 20240601,
    output: Annotated[
        Path | None, typer.Option(help="write the Markdown here instead of printing it")
    ] = None,
) -> None:
    """Compare pairing strategies with the simulated judge and print a Markdown report."""
    try:
        settings = EvaluationSettings(
            n=n,
            discrimination=discrimination,
            spread=spread,
            position_bias=position_bias,
            lapse_rate=lapse_rate,
            anchors=anchors,
            repeats=repeats,
            strategies=tuple(Strategy(part) for part in _parts(strategies)),
            budgets=tuple(sorted({int(part) for part in _parts(budgets)})),
            sensitivity_spreads=tuple(float(part) for part in _parts(sensitivity)),
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if any(budget < 1 for budget in settings.budgets):
        raise typer.BadParameter("budgets must be positive")
    command = _command_line(settings)
    document = render_markdown(asyncio.run(evaluate(settings)), command)
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")


def _parts(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _command_line(settings: EvaluationSettings) -> str:
    """The command that reproduces this report (every option spelt out)."""
    options = [
        f"--n {settings.n}",
        f"--discrimination {settings.discrimination:g}",
        f"--spread {settings.spread:g}",
        f"--position-bias {settings.position_bias:g}",
        f"--lapse-rate {settings.lapse_rate:g}",
        "--anchors" if settings.anchors else "--no-anchors",
        f"--repeats {settings.repeats}",
        f"--strategies {','.join(settings.strategies)}",
        f"--budgets {','.join(str(b) for b in settings.budgets)}",
    ]
    if settings.sensitivity_spreads:
        options.append(f"--sensitivity {','.join(f'{s:g}' for s in settings.sensitivity_spreads)}")
    options.append(f"--seed {settings.seed}")
    return shlex.join(["huleedu", "cj", "evaluate"]) + " " + " ".join(options)
