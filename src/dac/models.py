"""Loading models offline, and tiny random-weight models of real architectures for tests."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .protocol.prompt import SYSTEM_PROMPT

if TYPE_CHECKING:
    from .planning.blocks import PlanConfig

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


class ModelLoadError(ValueError):
    pass


def load(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
         device: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from what :func:`resolve_model` makes of ``path``
    (a local directory, a ``.gguf`` file, a fetched catalog name; only a hub id touches the
    network).

    ``dtype=None`` keeps the checkpoint's dtype on GPU and uses float32 on CPU, where bf16
    matmuls are many times slower."""
    device = check_device(device)
    if dtype is None:
        dtype = "auto" if device and str(device).startswith("cuda") else torch.float32
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a CLI prints its own output, not loader bars
    p = resolve_model(path)
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: not a transformers model directory")
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"cannot load model from {path}: {str(e).splitlines()[0]}") from None
    model.eval()
    if device:
        model.to(device)
    return model, tok


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The local model directory a ``--model`` value names (offline unless it is a hub id).

    A local directory is itself; a ``.gguf`` file is converted once into the cache
    (:func:`dac.catalog.fetch.convert_gguf_cached`); a catalog name (``dac models list``) is
    its fetched directory, else an error saying to run ``dac models get NAME``; an ``org/name``
    that is no local path is downloaded from the Hugging Face hub (or found in its cache).
    Anything else is a :class:`ModelLoadError` in one line."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.is_dir():
        return p
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{s} is a file, not a model directory or a .gguf file")
        from .catalog.fetch import FetchError, convert_gguf_cached

        try:
            return convert_gguf_cached(p)
        except FetchError as e:
            raise ModelLoadError(str(e)) from None
    from .catalog.entries import ADAPTERS, CATALOG

    if s in CATALOG or s in ADAPTERS:  # adapters: the merged model `dac models get` made
        from .catalog.fetch import state

        path = state(s)[1]
        if path is None:
            raise ModelLoadError(f"model {s!r} is not fetched yet: run `dac models get {s}`")
        return path
    if _HUB_ID.fullmatch(s) and not p.parent.exists():
        return _from_hub(s)
    raise ModelLoadError(f"model directory not found: {s} (nor a catalog name: see dac models "
                         "list)")


def _from_hub(repo_id: str) -> Path:
    """A hub model's snapshot directory: the local hub cache first, then the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelLoadError(f"model directory not found: {repo_id} (huggingface_hub is not "
                             "installed to fetch it as a hub id)") from None
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not in the hub cache: try the network
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 -- hub errors have many types; all end here
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = type(e).__name__
        if "RepositoryNotFound" in name or "GatedRepo" in name:
            why = "no such repository, or it is private or gated"
        elif "LocalEntryNotFound" in name or "Connect" in why or "offline" in why.lower():
            why = "the Hugging Face hub is unreachable (offline?)"
        raise ModelLoadError(f"model directory not found: {repo_id}, and it cannot be "
                             f"downloaded as a hub id: {why}") from None


def check_device(device: str | None) -> str | None:
    """``device`` if this torch build can use it, else a :class:`ModelLoadError` in one line
    (a CPU build asked for ``cuda``, a device index past the GPUs there are, a typo)."""
    if not device:
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} is not available: torch {torch.__version__} "
                                 "sees no CUDA GPU (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} is not available: "
                                 f"{torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} is not available on this machine")
    return str(dev)


DAC_CONFIG = "dac_config.json"

#: bytes read from each end of a weight file by :func:`weights_fingerprint`
FINGERPRINT_BYTES = 1 << 20


def weights_fingerprint(path: str | os.PathLike) -> str:
    """A short hash of a model directory's weights and config ("" if ``path`` is no directory).

    Results cached under a model's path must not survive new weights at that path (a retrained
    model copied over the old one). Hashing every byte of a large checkpoint takes minutes, so
    each weight file contributes its name, size and first and last MiB: training changes every
    tensor, so those bytes change with it."""
    import hashlib

    p = Path(path)
    if not p.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name != "config.json" and f.suffix not in (".safetensors", ".bin", ".pt"):
            continue
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                h.update(fh.read())
    return h.hexdigest()[:16]


#: :func:`dac.protocol.build_prompt` options a model's ``dac_config.json`` may record
PROMPT_OPTIONS = ("question_first",)


def read_dac_config(path: str | os.PathLike) -> dict[str, Any]:
    """``dac_config.json`` beside a model's weights ({} when there is none)."""
    import json

    f = Path(path) / DAC_CONFIG
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{f} is not valid JSON: {e}") from None
    return data if isinstance(data, dict) else {}


#: sampling fields read from ``generation_config.json`` and ``dac_config.json``'s "generation"
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k")


@dataclass(frozen=True)
class ModelDefaults:
    """How a model directory says it runs, read once and used by the CLI, the Python API
    (:func:`dac.engines.hf.generate` without a ``config``) and the server alike."""

    plan: PlanConfig  # the mask planner it was trained or tuned with
    prompt: dict[str, Any]  # :func:`dac.protocol.build_prompt` options it was trained with
    #: ``do_sample`` (False: greedy) and, when sampling, temperature / top_p / top_k
    sampling: dict[str, Any] = field(default_factory=lambda: {"do_sample": False})
    #: the attention protocol it follows (:mod:`dac.protocol.base`): ``da`` unless its
    #: ``dac_config.json`` names another
    protocol: str = "da"


def _sampling(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    import json

    sources: list[Any] = []
    gen = path / "generation_config.json"
    if gen.is_file():
        try:
            sources.append(json.loads(gen.read_text()))
        except (OSError, json.JSONDecodeError):
            pass
    sources.append(data.get("generation"))
    out: dict[str, Any] = {}
    for d in sources:
        if isinstance(d, dict):
            out.update({k: d[k] for k in SAMPLING_FIELDS if d.get(k) is not None})
    return out if out.get("do_sample") else {"do_sample": False}


def load_defaults(path: str | os.PathLike) -> ModelDefaults:
    """The model's defaults: PlanConfig fields (top level or under ``"plan"``) and prompt
    options (``"prompt"``: ``question_first``) from ``dac_config.json``, sampling from
    ``generation_config.json`` then ``dac_config.json``'s ``"generation"``; greedy and the
    library's defaults otherwise."""
    import dataclasses

    from .planning.blocks import PlanConfig

    data = read_dac_config(path)
    plan = data.get("plan", data)
    if not isinstance(plan, dict):
        plan = {}
    names = {fld.name for fld in dataclasses.fields(PlanConfig)}
    prompt = data.get("prompt", {})
    if not isinstance(prompt, dict):
        prompt = {}
    return ModelDefaults(PlanConfig(**{k: v for k, v in plan.items() if k in names}),
                         {k: True for k in PROMPT_OPTIONS if prompt.get(k) is True},
                         _sampling(Path(path), data), protocol_name(data.get("protocol")))


#: ``dac_config.json`` "protocol" values of the brackets dialect (its versioned name)
BRACKETS_NAMES = ("brackets", "dac-protocol/1")


def protocol_name(value: Any) -> str:
    """The protocol a ``dac_config.json`` names (``da`` when it names none)."""
    if value in BRACKETS_NAMES:
        return "brackets"
    return value if isinstance(value, str) and value else "da"


def model_defaults(model: Any) -> ModelDefaults:
    """:func:`load_defaults` of the directory a loaded model came from (the library's
    defaults for a model built in memory)."""
    from .planning.blocks import PlanConfig

    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return load_defaults(path) if path and Path(path).is_dir() else ModelDefaults(PlanConfig(), {})


def load_prompt_options(path: str | os.PathLike) -> dict[str, Any]:
    """Keyword options of :func:`dac.protocol.build_prompt` a model was trained with."""
    return load_defaults(path).prompt


def load_plan_config(path: str | os.PathLike) -> PlanConfig:
    """The PlanConfig a model was trained or tuned with, else the defaults."""
    return load_defaults(path).plan


def train_tokenizer(texts: list[str], vocab_size: int = 2048,
                    extra_tokens: list[str] | None = None, split_digits: bool = False) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (fast, offline, with offsets).

    ``split_digits``: every digit is its own token (as in Llama 2 and Qwen), so a number is
    the same tokens wherever it stands and a model copies it digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 byte_level]) if split_digits else byte_level)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts, trainer)
    if extra_tokens:
        tk.add_tokens(extra_tokens)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


_TINY_CORPUS = SYSTEM_PROMPT + """
The quick brown fox jumps over the lazy dog. One of the special magic numbers for the key is
1234567. Question: What is the value? Answer: [[focus S3]] [[global]] [[local]] S1 S2 S10
The section lists the river, the mountain, the city and the harbour. Numbers 0 1 2 3 4 5 6 7 8 9.
"""


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    return train_tokenizer([_TINY_CORPUS] * 4, vocab_size=vocab_size)


def tiny_model(family: str = "llama", vocab_size: int = 512, *, hidden: int = 64,
               layers: int = 2, heads: int = 4, kv_heads: int = 2, head_dim: int = 16,
               max_positions: int = 4096, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A random-weight model of a real architecture: ``llama``, ``qwen2``, ``qwen3``, ``gemma``,
    ``mistral`` (sliding window, refused by the engine) or ``gemma2`` (soft-capping, refused)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    cls = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {"head_dim": head_dim}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, {"head_dim": head_dim}),
        "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM, {"head_dim": head_dim}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM,
                    {"head_dim": head_dim, "sliding_window": 128}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {"head_dim": head_dim}),
    }
    if family not in cls:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(cls)}")
    config_cls, model_cls, extra = cls[family]
    torch.manual_seed(seed)
    config = config_cls(**common, **extra)
    config._attn_implementation = "sdpa"
    model = model_cls(config).to(dtype)
    model.eval()
    return model
