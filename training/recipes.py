"""SFT recipes: a YAML file validated by pydantic, with ``--set key=value`` overrides.

Every section forbids unknown keys, so a typo (``learning_rat``) fails with the file, the
dotted field and the keys that are allowed, instead of being silently ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from skillgym.io import read_yaml_mapping
from skillgym.models import is_known_model, resolve_model

from .tiny import TinyModelSpec

TINY = "tiny"


class RecipeError(ValueError):
    """A recipe file or override that does not validate; the message names file, field and fix."""


class TokenizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: bool = Field(default=False, description="Train a byte-level BPE tokenizer on the dataset (tiny student).")
    vocab_size: int = Field(
        default=2048, ge=300, description="BPE vocabulary (bytes + merges), boilerplate tokens aside."
    )
    boilerplate_min_fraction: float | None = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Lines in at least this share of conversations become one token; null: off.",
    )


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, description="Rank of the update matrices.")
    alpha: int = Field(default=32, ge=1, description="Scale: the update is multiplied by alpha / r.")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field(default="all-linear", description="'all-linear' or module names.")
    merge: bool = Field(default=False, description="Also write base + adapter merged into <output_dir>/merged.")


class TrainingSpec(BaseModel):
    """The trainer's knobs (a subset of TRL's SFTConfig, named the same)."""

    model_config = ConfigDict(extra="forbid")

    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, description="Stop after this many optimizer steps (-1: run the epochs).")
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    per_device_train_batch_size: int = Field(default=8, ge=1)
    per_device_eval_batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=2048, ge=16, description="Tokens per example (or per packed row); longer are cut.")
    packing: bool = Field(default=False, description="Pack examples into rows of max_length (BFD, padding-free).")
    group_by_length: bool = Field(default=True, description="Batch examples of similar length (less padding).")
    bf16: bool | Literal["auto"] = Field(
        default="auto", description="bfloat16 autocast; 'auto': where the GPU or CPU (AVX512-BF16/AMX) supports it."
    )
    gradient_checkpointing: bool = False
    shared_prefix: bool = Field(
        default=False,
        description="Run the tokens that every conversation of a batch starts with (the system prompt with the tool "
        "schemas) once per batch, for one row and without gradient, and train the rest on top of its key/value "
        "cache. The loss is the same; the prefix positions get no gradient. Pays where a long shared prompt "
        "dominates each example (SmolLM2 on codebase-explorer: ~1,400 of ~1,800 tokens).",
    )
    length_buckets: int | None = Field(
        default=None,
        ge=1,
        description="Shuffle, then sort each run of this many batches by length and cut it into batches: less "
        "padding, and each batch still mixes lengths (unlike group_by_length's 50-batch groups). None: off.",
    )
    logging_steps: int = Field(default=10, ge=1)
    eval_steps: int | None = Field(default=None, ge=1, description="Validation loss every N steps (None: each epoch).")
    save_steps: int | None = Field(default=None, ge=1, description="Checkpoint every N steps (None: each epoch).")
    save_total_limit: int | None = Field(default=2, ge=1)
    seed: int = 0
    # A warning, never a stop: a wall-clock stop would cut the learning-rate schedule at a point
    # that depends on the machine's speed and load, so one command would give different models.
    # The training length is the fixed budget above (num_train_epochs or max_steps).
    warn_after_minutes: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("warn_after_minutes", "max_train_minutes"),
        description="Warn once training wall time passes this; training still runs its whole schedule. "
        "(Older recipes call it max_train_minutes, which used to stop training.)",
    )
    torch_threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (None: torch's default).")

    def model_post_init(self, __context: Any) -> None:
        if self.shared_prefix and self.gradient_checkpointing:
            # transformers drops the key/value cache a checkpointed layer is given (its backward
            # replay would write it twice), so the suffixes would train without seeing the prompt.
            raise ValueError(
                "shared_prefix and gradient_checkpointing cannot both be on: checkpointed layers drop the "
                "prefix's key/value cache, so the suffixes would train without the prompt; turn one off "
                "(for long examples that do not fit, a smaller per_device_train_batch_size with more "
                "gradient_accumulation_steps keeps shared_prefix)"
            )


from .warmup import WarmupSpec  # noqa: E402  (kept next to its only use)


class SFTRecipe(BaseModel):
    """One SFT run: which model, which data, how to train, where to write."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="'tiny' (from scratch) or a Hugging Face id / local folder.")
    dataset: Path | None = Field(default=None, description="Folder written by `skillgym export` (a DatasetDict).")
    extra_datasets: list[Path] = Field(
        default_factory=list,
        description=(
            "More `skillgym export` folders whose train rows are all added to the dataset's (after "
            "max_train_examples), e.g. the calls an orchestrator made: `skillgym export RUN --children NAME`."
        ),
    )
    output_dir: Path = Path("runs/sft")
    val_fraction: float = Field(
        default=0.05, ge=0, lt=1, description="Held out when the dataset has no validation split."
    )
    max_train_examples: int | None = Field(default=None, ge=1)
    skip_train_examples: int = Field(
        default=0,
        ge=0,
        description=(
            "Train examples passed over before max_train_examples are taken, in the seeded shuffle's "
            "order: a run continued from a student (`model: STUDENT/merged`) with the same seed and "
            "skip_train_examples=N sees the N+1st example on, none it was trained on."
        ),
    )
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)
    lora: LoraSpec | None = Field(
        default=None, description="LoRA adapters (pretrained models only); null: full fine-tuning."
    )
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = Field(
        default=None, description="e.g. 'flash_attention_2', 'sdpa'; None: default."
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    warmup: WarmupSpec | None = Field(default=None, description="LM warm-up on code before SFT (tiny student only).")
    resume: bool = Field(default=True, description="Continue from the newest checkpoint in output_dir, if any.")

    def model_post_init(self, __context: Any) -> None:
        if self.model == TINY and self.lora is not None:
            raise ValueError("lora is for pretrained models; the tiny student is fully fine-tuned (set lora: null)")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings (an override of ``--set``), making sections on the way."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """``["training.learning_rate=1e-3"]`` -> ``[("training.learning_rate", 0.001)]`` (YAML values)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set training.learning_rate=1e-3")
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (the location of an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if isinstance(current, type) else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(current.model_fields) if isinstance(current, type) else []


def validate_recipe(data: dict[str, Any], source: str = "<recipe>") -> SFTRecipe:
    try:
        return SFTRecipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "(top level)"
            if err["type"] == "extra_forbidden":
                known = _known_keys(SFTRecipe, loc)
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(f"{where}: unknown key; {hint}allowed here: {', '.join(known)}")
            else:
                problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(problems)) from None


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    resolve_models: bool = True,
) -> SFTRecipe:
    """Read a YAML recipe (or start from ``base``), apply ``--set`` overrides, validate.

    With ``resolve_models``, a named pretrained student (``model: smollm2-135m``, see
    :data:`skillgym.models.KNOWN_MODELS`) becomes its cached converted folder, downloaded and
    converted on first use; False leaves the name (validation only, nothing fetched).
    """
    data: dict[str, Any] = dict(base or {})
    source = "<recipe>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe file (bundled: {', '.join(bundled_recipes())})")
        data.update(read_yaml_mapping(path, RecipeError, "recipe"))
    for key, value in parse_overrides(overrides or []):
        set_dotted(data, key, value)
    recipe = validate_recipe(data, source)
    if resolve_models and is_known_model(recipe.model):
        recipe.model = resolve_model(recipe.model)
    return recipe


def bundled_recipes() -> list[str]:
    return sorted(p.name for p in Path(__file__).parent.glob("*.yaml"))


def bundled_recipe_path(name: str) -> Path:
    """A recipe shipped in this package, e.g. ``tiny-cpu.yaml``."""
    path = Path(__file__).parent / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        raise RecipeError(f"no bundled recipe {name!r}; bundled: {', '.join(bundled_recipes())}")
    return path
