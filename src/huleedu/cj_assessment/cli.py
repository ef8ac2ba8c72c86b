"""`huleedu cj ...`: the CJ commands (the platform CLI mounts `app` under `cj`)."""

import asyncio
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from huleedu.cj_assessment.config import DEFAULT_RANKING_SIZE, DEFAULT_STRATEGY
from huleedu.cj_assessment.evaluation import Design, EvaluationSettings, evaluate
from huleedu.cj_assessment.evaluation_report import render_markdown

app = typer.Typer(help="Comparative judgement tools.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Comparative judgement tools."""


ALL_DESIGNS = (
    "random:2,adaptive:2,uncertain:2,random:3,uncertain:3,random:4,uncertain:4,"
    "random:5,uncertain:5,random:6,uncertain:6"
)


@app.command("evaluate")
def evaluate_command(
    n: Annotated[int, typer.Option(min=2, help="student essays per simulated batch")] = 30,
    discrimination: Annotated[float, typer.Option(min=0.0, help="the judge's discrimination")] = 1.0,
    spread: Annotated[float, typer.Option(min=0.0, help="SD of the true qualities, logits")] = 1.5,
    position_bias: Annotated[float, typer.Option(help="logits in favour of the essay shown first")] = 0.2,
    lapse_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of coin-toss choices")] = 0.05,
    anchors: Annotated[bool, typer.Option(help="judge six graded anchors in the pool")] = True,
    repeats: Annotated[int, typer.Option(min=2, help="simulated batches per design at --spread")] = 40,
    designs: Annotated[
        str, typer.Option(help="comma-separated designs, strategy:size (size 2: pairs, 3..6: rankings)")
    ] = ALL_DESIGNS,
    other_spreads: Annotated[
        str, typer.Option(help="comma-separated other true SDs (random pairing and the default only)")
    ] = "1,2.5",
    other_repeats: Annotated[int, typer.Option(min=2, help="simulated batches at each other SD")] = 30,
    ranking_budget: Annotated[
        int, typer.Option(min=1, help="essay-reads per essay a ranking design runs to")
    ] = 12,
    seed: Annotated[int, typer.Option(help="fixes every random draw")] = 20240601,
    output: Annotated[
        Path | None, typer.Option(help="write the Markdown here instead of printing it")
    ] = None,
) -> None:
    """Compare judgement designs (pairs and rankings, equal and uncertainty-driven allocation) with
    the simulated judge and print a Markdown report. The defaults are docs/cj-evaluation.md's."""
    try:
        settings = EvaluationSettings(
            n=n,
            discrimination=discrimination,
            spread=spread,
            position_bias=position_bias,
            lapse_rate=lapse_rate,
            anchors=anchors,
            repeats=repeats,
            designs=tuple(Design.parse(part) for part in _parts(designs)),
            other_spreads=tuple(float(part) for part in _parts(other_spreads)),
            other_repeats=other_repeats,
            ranking_budget=ranking_budget,
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    command = _command_line(settings)
    default = Design(DEFAULT_STRATEGY, DEFAULT_RANKING_SIZE)
    started = time.monotonic()

    def progress(step: str) -> None:
        typer.echo(f"{time.monotonic() - started:7.0f} s  {step}", err=True)

    document = render_markdown(asyncio.run(evaluate(settings, default, progress)), command)
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")


def _parts(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _command_line(settings: EvaluationSettings) -> str:
    """The command that reproduces this report: the options that differ from the defaults."""
    defaults = EvaluationSettings(
        designs=tuple(Design.parse(part) for part in _parts(ALL_DESIGNS)), other_spreads=(1.0, 2.5)
    )
    options = []
    for name, flag in (
        ("n", "--n"),
        ("discrimination", "--discrimination"),
        ("spread", "--spread"),
        ("position_bias", "--position-bias"),
        ("lapse_rate", "--lapse-rate"),
        ("repeats", "--repeats"),
        ("other_repeats", "--other-repeats"),
        ("ranking_budget", "--ranking-budget"),
        ("seed", "--seed"),
    ):
        value = getattr(settings, name)
        if value != getattr(defaults, name):
            options.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if not settings.anchors:
        options.append("--no-anchors")
    if settings.designs != defaults.designs:
        options.append(f"--designs {','.join(str(d) for d in settings.designs)}")
    if settings.other_spreads != defaults.other_spreads:
        options.append(
            f"--other-spreads {','.join(f'{s:g}' for s in settings.other_spreads) or shlex.quote('')}"
        )
    return " ".join([*shlex.split("huleedu cj evaluate"), *options])
