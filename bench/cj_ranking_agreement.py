"""How well the llm judge's rankings agree with the pairs they imply, on the local model server.

    .venv/bin/python bench/cj_ranking_agreement.py [--essays 30] [--rankings 60] [--seed 1]

For each ranking size k = 3..6: `--rankings` rankings of k essays drawn from `--essays` sample essays,
each followed by every pair it implies, asked as a pair in a random order. The server's hidden
qualities are drawn from a normal distribution with SD `--spread` logits and it judges with
discrimination 1, as the simulated judge of docs/cj-evaluation.md does. Printed per k: the share of implied pairs the pair verdicts agree
with (all, and adjacent places only), against the share of pairs that agree with themselves shown the
other way round (the noise floor of the pairs themselves), and the tokens per essay read for a
ranking against a pair. The same with a server that ranks badly (echoes the order shown), to show the
judge's own check (`RankingCheck`) falling back to pairs.
"""

import argparse
import asyncio
import random
from itertools import combinations

from huleedu.cj_assessment.judges.llm import LLMJudge, LLMJudgeSettings, RankingCheck
from huleedu.cj_assessment.judges.port import EssayText, Side
from support.cj_jobs import essay_texts
from support.model_server import ModelServer

NO_CHECKS = RankingCheck(first_checks=0, check_every=10**9)


async def agreement(server: ModelServer, essays: list[EssayText], size: int, rankings: int, seed: int) -> str:
    draw = random.Random(seed)
    agreed = adjacent_agreed = implied = adjacent = 0
    ranking_tokens = ranking_reads = pair_tokens = pair_reads = 0
    async with LLMJudge(
        LLMJudgeSettings(base_url=server.base_url, model="bench", ranking_check=NO_CHECKS, max_concurrency=8)
    ) as judge:
        for _ in range(rankings):
            shown = draw.sample(essays, size)
            ranking = await judge.rank(shown)
            if ranking.usage is not None:
                ranking_tokens += ranking.usage.tokens_in + ranking.usage.tokens_out
                ranking_reads += size
            place = {shown[position].essay_id: rank for rank, position in enumerate(ranking.order)}
            asked = [(a, b) if draw.random() < 0.5 else (b, a) for a, b in combinations(shown, 2)]
            verdicts = await asyncio.gather(*(judge.compare(first, second) for first, second in asked))
            for (first, second), verdict in zip(asked, verdicts, strict=True):
                a, b = first, second
                if verdict.usage is not None:
                    pair_tokens += verdict.usage.tokens_in + verdict.usage.tokens_out
                    pair_reads += 2
                winner = first if verdict.winner is Side.A else second
                loser = second if winner is first else first
                agrees = place[winner.essay_id] < place[loser.essay_id]
                implied += 1
                agreed += agrees
                if abs(place[a.essay_id] - place[b.essay_id]) == 1:
                    adjacent += 1
                    adjacent_agreed += agrees
        pairs = [draw.sample(essays, 2) for _ in range(rankings * 2)]
        forwards = await asyncio.gather(*(judge.compare(a, b) for a, b in pairs))
        backwards = await asyncio.gather(*(judge.compare(b, a) for a, b in pairs))
        consistent = sum(
            (forward.winner is Side.A) == (backward.winner is Side.B)
            for forward, backward in zip(forwards, backwards, strict=True)
        )
    return (
        f"| {size} | {implied} | {agreed / implied:.1%} | {adjacent_agreed / adjacent:.1%} "
        f"| {consistent / len(pairs):.1%} | {ranking_tokens / ranking_reads:.0f} | {pair_tokens / pair_reads:.0f} |"
    )


async def fallback(server: ModelServer, essays: list[EssayText], seed: int) -> str:
    server.behaviour.ranking = "shown"
    draw = random.Random(seed)
    async with LLMJudge(LLMJudgeSettings(base_url=server.base_url, model="bench", seed=seed)) as judge:
        asked = 0
        while judge.ranks_well and asked < 200:
            await judge.rank(draw.sample(essays, 4))
            asked += 1
    server.behaviour.ranking = "plackett-luce"
    record = judge.rankings
    return (
        f"a server that echoes the order shown: rankings given up after {asked} rankings and "
        f"{record.checks} checks ({record.agreement or 0.0:.0%} agreed): {record.given_up}"
    )


async def main(args: argparse.Namespace) -> None:
    essays = [EssayText(f"essay-{i:02}", text) for i, text in enumerate(essay_texts(args.essays))]
    draw = random.Random(args.seed)
    qualities = {essay.text: draw.gauss(0.0, args.spread) for essay in essays}
    async with ModelServer(seed=args.seed, qualities=qualities, discrimination=1.0) as server:
        print(
            f"Rankings against the pairs they imply: {args.essays} essays (true SD {args.spread:g} logits), "
            f"{args.rankings} rankings per size\n"
        )
        print(
            "| k | implied pairs | agree | agree, adjacent places | a pair agrees with itself reversed "
            "| tokens per essay read, ranking | tokens per essay read, pair |"
        )
        print("|---|---|---|---|---|---|---|")
        for size in (3, 4, 5, 6):
            print(await agreement(server, essays, size, args.rankings, args.seed + size), flush=True)
        print("\n" + await fallback(server, essays, args.seed))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--essays", type=int, default=30)
    parser.add_argument("--rankings", type=int, default=40)
    parser.add_argument("--spread", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
