"""The records that cross skillgym's boundaries: skills, tasks, grades and trajectories.

Everything here is a pydantic model so it validates on the way in and serializes losslessly
on the way out (trajectory shards, task files, dataset export).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Message = dict[str, Any]
"""One OpenAI-format chat message: ``role``, ``content`` and optionally ``tool_calls``,
``tool_call_id``, ``name`` and ``reasoning_content``. Kept as a plain dict because it must
round-trip byte for byte through providers, datasets and chat templates.

A ``tool`` message may also carry ``images``: a list of :class:`ImagePart` dicts the tool
returned (a screenshot, a plot). ``content`` stays the tool's text, so a text-only policy
and every chat template read the message as before; a multimodal policy sends the images
too (:mod:`skillgym.policies.openai_policy`). Observations carry each image's bytes
(``data``); stored trajectories keep only the reference (digest, size, path)."""

Split = Literal["train", "validation", "test"]


class ImagePart(BaseModel):
    """An image a tool returned, next to its text.

    Args:
        mime_type: ``image/png``, ``image/jpeg``, ...
        sha256: Digest of the image bytes: the reference a stored trajectory keeps.
        bytes: Size of the image in bytes.
        width: Pixels across, when known.
        height: Pixels down, when known.
        path: Where the tool left the file (in the sandbox), when it kept one.
        data: The image, base64-encoded. Present in observations, so a policy can send it;
            dropped from stored trajectories (:func:`strip_image_data`).
    """

    model_config = ConfigDict(extra="forbid")

    mime_type: str = "image/png"
    sha256: str
    bytes: int = Field(ge=0)
    width: int | None = None
    height: int | None = None
    path: str | None = None
    data: str | None = None

    @classmethod
    def from_bytes(
        cls,
        raw: bytes,
        mime_type: str = "image/png",
        *,
        path: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> ImagePart:
        """An image part holding ``raw`` (digest and size computed here).

        Args:
            raw: The image file's bytes.
            mime_type: Its media type.
            path: Where the tool left it, if anywhere.
            width: Pixels across, when known.
            height: Pixels down, when known.

        Returns:
            The part, with ``data`` set.
        """
        return cls(
            mime_type=mime_type,
            sha256="sha256:" + hashlib.sha256(raw).hexdigest(),
            bytes=len(raw),
            width=width,
            height=height,
            path=path,
            data=base64.b64encode(raw).decode("ascii"),
        )

    def data_url(self) -> str | None:
        """``data:<mime>;base64,...`` (what OpenAI-compatible APIs take as an ``image_url``), or None without data."""
        return f"data:{self.mime_type};base64,{self.data}" if self.data else None

    def placeholder(self) -> str:
        """A one-line stand-in for the image, for text transcripts."""
        size = f" {self.width}x{self.height}" if self.width and self.height else ""
        where = f" {self.path}" if self.path else ""
        return f"[image {self.mime_type}{size}, {self.bytes:,} bytes{where}]"


class ToolOutput(BaseModel):
    """What a tool may return instead of a plain string: its text and the images that go with it.

    Args:
        text: What every policy reads (the whole answer for a text-only model).
        images: Images for multimodal policies (see :class:`ImagePart`).
    """

    text: str
    images: list[ImagePart] = Field(default_factory=list)


def strip_image_data(messages: list[Message]) -> list[Message]:
    """``messages`` with the bytes of every image dropped (references kept): what gets stored.

    Messages without images are returned as they are (not copied); the others are shallow
    copies with new ``images`` lists.
    """
    out = []
    for message in messages:
        images = message.get("images")
        if images and any(isinstance(i, dict) and i.get("data") is not None for i in images):
            message = {
                **message,
                "images": [{k: v for k, v in i.items() if k != "data"} if isinstance(i, dict) else i for i in images],
            }
        out.append(message)
    return out


def text_only(messages: list[Message]) -> list[Message]:
    """``messages`` without their ``images`` (what a text-only model is shown); others unchanged."""
    return [{k: v for k, v in m.items() if k != "images"} if "images" in m else m for m in messages]


class SkillSpec(BaseModel):
    """A parsed skill (Agent Skills ``SKILL.md`` folder) or subagent definition (agent ``.md``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    instructions: str = Field(description="The body of the file: the skill text or system prompt.")
    kind: Literal["skill", "agent"] = "skill"
    allowed_tools: list[str] | None = Field(
        default=None, description="Tool names the skill asks for; None means no restriction."
    )
    files: list[str] = Field(default_factory=list, description="Bundled files, relative to the skill folder.")
    license: str | None = None
    model: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Every other frontmatter field.")
    source_path: str | None = None
    content_hash: str = ""

    def model_post_init(self, __context: Any) -> None:
        if not self.content_hash:
            self.content_hash = self.compute_hash()

    def compute_hash(self) -> str:
        """sha256 over the fields that change what a model sees (not where the file lives)."""
        payload = json.dumps(
            {
                "name": self.name,
                "description": self.description,
                "instructions": self.instructions,
                "allowed_tools": self.allowed_tools,
                "files": sorted(self.files),
            },
            sort_keys=True,
        )
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

    @property
    def folder(self) -> Path | None:
        return Path(self.source_path).parent if self.source_path else None


class Task(BaseModel):
    """One unit of work for an environment.

    Args:
        id: Unique within its task source; trajectories and stores key on it.
        prompt: The user message that opens the episode.
        files: Seed files written into the sandbox workspace before the first turn
            (relative path -> text).
        reference: What the grader needs (gold answer, checks, rubric items, question type);
            never shown to the model.
        metadata: Topic, difficulty, persona, ...; ``reset`` passes it on as
            ``info["task_metadata"]``.
        split: ``train``, ``validation`` or ``test``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    files: dict[str, str] = Field(
        default_factory=dict, description="Seed files for the workspace: relative path -> text."
    )
    reference: dict[str, Any] = Field(
        default_factory=dict,
        description="What the grader needs: gold answer, checks, rubric items, question type, ...",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Topic, difficulty, persona, ...")
    split: Split = "train"


class Grade(BaseModel):
    """A grader's verdict: a score in [0, 1] and the parts that explain it."""

    score: float = Field(ge=0.0, le=1.0)
    components: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class StepTiming(BaseModel):
    """Wall time of one turn, keyed by its turn number (1-based).

    ``tool_seconds`` is the env's step (parsing, tool calls, grading); ``policy_seconds`` is
    the policy's turn, handed to the env by the episode driver through
    :meth:`skillgym.env.SkillEnv.record_policy_turn` (None when nobody timed it).
    """

    turn: int
    tool_seconds: float = 0.0
    policy_seconds: float | None = None


class ToolError(BaseModel):
    """One defect in a turn that came back to the model as a tool message.

    ``tool`` names the tool the call asked for when the call could be read that far (None
    for markup that could not be parsed at all).
    """

    turn: int
    tool: str | None = None
    error: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Trajectory(BaseModel):
    """The lossless record of one episode: enough to replay, train on, or audit it.

    :class:`~skillgym.env.SkillEnv` builds it (``reset`` opens it, ``step`` adds each turn,
    ``record_policy_turn`` adds the policy's side of a turn) and ``env.trajectory`` returns a
    copy; :func:`skillgym.episode.run_episode` returns that copy at the end of an episode.
    An episode that could not finish is recorded with :meth:`Trajectory.failed`.

    Args:
        env_id: The env's id (``name-vN``); ``env_version`` is its ``N``.
        task_id: The task's id in the env's task source.
        skill_hash: ``SkillSpec.content_hash`` of the skill text the model could see; None
            when it saw none (no skill, or ``instruction_mode="none"``).
        policy_id: Who played the assistant turns.
        messages: The chat in OpenAI format (system, user, assistant with ``tool_calls``,
            ``tool``), exactly as the model saw and wrote it, except that images a tool
            returned are kept as references (digest, size, path), never as bytes.
        tools: The OpenAI tool schemas offered.
        timings: One :class:`StepTiming` per turn.
        tool_errors: Every defect reported back to the model.
        reward: The grader's score in [0, 1] (0.0 when truncated, None when failed or unfinished).
        reward_components: The parts of the score, as the grader names them.
        grade_details: The grader's notes.
        final_answer: The submitted answer (the last turn's text, or the ``submit`` argument).
        terminated: The episode ended with an answer.
        truncated: A turn, token or step budget ran out first.
        usage: Tokens the policy reported, summed over turns.
        token_ids: Per assistant turn, when the policy gives them (no re-tokenization drift).
        logprobs: Per assistant turn, aligned with ``token_ids``.
        children: Subagent episodes called from this one.
        seed: The seed ``reset`` got.
        sample_index: Which sample of the task this is (several per task in a rollout run).
        status: ``ok``, or ``failed`` when the episode broke (``error`` says why).
        error: Why a failed episode failed.
        metadata: The task's split, the instruction mode, the rollout attempt, ...
    """

    env_id: str
    env_version: int
    task_id: str
    skill_hash: str | None = None
    policy_id: str = "unknown"
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list, description="OpenAI tool schemas offered.")
    timings: list[StepTiming] = Field(default_factory=list)
    tool_errors: list[ToolError] = Field(default_factory=list)
    reward: float | None = None
    reward_components: dict[str, float] = Field(default_factory=dict)
    grade_details: dict[str, Any] = Field(default_factory=dict)
    final_answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    usage: Usage = Field(default_factory=Usage)
    token_ids: list[list[int]] | None = Field(
        default=None, description="Per assistant turn, when the policy gives them."
    )
    logprobs: list[list[float]] | None = None
    children: list[Trajectory] = Field(default_factory=list, description="Subagent episodes called from this one.")
    seed: int | None = None
    sample_index: int = 0
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _no_image_bytes(cls, messages: list[Message]) -> list[Message]:
        # A record holds references to images, never their bytes: a few screenshots would
        # otherwise turn a JSONL line into megabytes.
        return strip_image_data(messages)

    @property
    def num_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @classmethod
    def failed(
        cls,
        error: str,
        *,
        env_id: str,
        env_version: int,
        task_id: str,
        skill_hash: str | None = None,
        policy_id: str = "unknown",
        seed: int | None = None,
        sample_index: int = 0,
        partial: Trajectory | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Trajectory:
        """The record of an episode that could not finish (a sandbox error, a timeout, a
        policy that raised, a worker that died).

        Args:
            error: Why it failed, one line first (``"TimeoutError: ..."``).
            env_id, env_version, task_id, skill_hash, policy_id, seed, sample_index: Who and
                what, as in an ok record; used where ``partial`` is None.
            partial: What the episode got to before it broke (``env.trajectory``), kept
                because it says where it broke; its header fields win over the ones above.
            metadata: Merged into the record's metadata (e.g. a traceback).

        Returns:
            A trajectory with ``status="failed"``, the ``error`` and no reward.
        """
        if partial is not None:
            record = partial.model_copy(deep=True)
            if record.policy_id == "unknown":
                record.policy_id = policy_id
            record.sample_index = sample_index
        else:
            record = cls(
                env_id=env_id,
                env_version=env_version,
                task_id=task_id,
                skill_hash=skill_hash,
                policy_id=policy_id,
                seed=seed,
                sample_index=sample_index,
            )
        record.status, record.error, record.reward = "failed", error, None
        record.metadata.update(metadata or {})
        return record
