"""An engine whose random model 'writes' chosen text per prompt (directives included), so the
runner's metrics can be checked against what an ideal or a known-bad model would do."""

from __future__ import annotations

from typing import Any

from dac.engines.base import HFEngine
from dac.engines.hf.generate import generate
from tests.helpers import forcing


class ScriptedEngine(HFEngine):
    """Writes ``script(layout)`` for each prompt, through the real DAC session."""

    def __init__(self, model: Any, tokenizer: Any, script: Any):
        super().__init__(model, tokenizer)
        self.script = script
        self.calls: list[int] = []  # batch sizes, one per generate call

    def generate(self, layouts, *, policy, config, max_new_tokens, evidence=None,
                 bound_sections=True, sampling=None):
        self.calls.append(len(layouts))
        texts = [self.script(lay) for lay in layouts]
        return generate(self.model, self.tokenizer, layouts, policy=policy, config=config,
                        max_new_tokens=max_new_tokens, evidence=evidence,
                        bound_sections=bound_sections, **forcing(self.tokenizer, texts, layouts))


def ideal_script(tokenizer: Any, samples: list[Any]) -> Any:
    """Each prompt's ideal target (its sample's ``target``), looked up by prompt text."""
    by_text = {s.layout(tokenizer).text: s.target for s in samples}
    return lambda layout: by_text[layout.text]
