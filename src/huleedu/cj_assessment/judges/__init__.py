"""The judges behind one port: simulated (evaluation, tests), heuristic (offline default) and llm."""

from huleedu.cj_assessment.judges.port import EssayText, Judge, JudgeError, Judgement, Side

__all__ = ["EssayText", "Judge", "JudgeError", "Judgement", "Side"]
