"""The paper's rubric judge: per-question binary rubrics written once by a chosen model,
applied to a run's records by one fixed judge (docs/judge.md).

* :mod:`.models`: the chat models (an OpenAI-compatible endpoint, a ``dac`` engine).
* :mod:`.rubrics`: examples, the rubric store and its authors.
* :mod:`.verdicts`: the judges, verdict parsing, :func:`judge_run` and :func:`load_verdicts`.

Light to import: no torch until an engine judge generates.
"""

from __future__ import annotations

from .models import ChatModel, Completion, EngineChat, OpenAIChat, chat_endpoint, strip_thinking
from .rubrics import (Example, ModelAuthor, Rubric, RubricAuthor, RubricStore, StubAuthor,
                      example_from_record, load_examples, write_rubrics)
from .verdicts import (Judge, JudgeItem, JudgeSummary, ModelJudge, StubJudge, apply_verdicts,
                       check_judge, format_failure, judge_run, judged_answer, load_verdicts,
                       parse_verdict, read_scored_cells, verdict_path)

__all__ = ["ChatModel", "Completion", "EngineChat", "Example", "Judge", "JudgeItem",
           "JudgeSummary", "ModelAuthor", "ModelJudge", "OpenAIChat", "Rubric", "RubricAuthor",
           "RubricStore", "StubAuthor", "StubJudge", "chat_endpoint", "check_judge",
           "apply_verdicts", "example_from_record", "format_failure", "judge_run",
           "judged_answer", "load_examples", "load_verdicts", "parse_verdict",
           "read_scored_cells", "strip_thinking", "verdict_path", "write_rubrics"]
