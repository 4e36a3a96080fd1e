"""Images in tool results: any env's tool may return an image beside its text.

A multimodal OpenAI-compatible model gets the image (a loopback server records the request:
the tool message keeps the text, a user message after it carries an ``image_url`` data URL);
a text-only policy (the chat template, an in-process HF model) sees exactly the text; the
record and the SFT export keep a digest reference, never the bytes; transcripts show a
placeholder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from skillgym.chat_template import canonical, render
from skillgym.env import SkillEnv, approx_tokens
from skillgym.episode import run_episode
from skillgym.policies.base import Action, Policy
from skillgym.policies.openai_policy import OpenAIPolicy, to_openai_messages
from skillgym.policies.spec import make_policy
from skillgym.testing import ScriptedOpenAIServer, assistant_message, tool_call
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.tools.base import Tool, ToolArgs
from skillgym.transcript import transcript_text
from skillgym.types import ImagePart, ToolOutput, Trajectory, strip_image_data, text_only

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_env import make_env  # noqa: E402

ENTRY = "test_image_parts:make_image_env"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (stdlib only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


class SnapArgs(ToolArgs):
    colour: str = Field(description="red or blue")


class Snapshot(Tool):
    """A host tool that answers with text and a picture (as a screenshot tool would)."""

    name = "snapshot"
    description = "Take a picture in the given colour."
    Args = SnapArgs

    def __call__(self, sandbox: Any, args: SnapArgs) -> ToolOutput:
        rgb = (200, 30, 30) if args.colour == "red" else (30, 30, 200)
        raw = png(64, 48, rgb)
        image = ImagePart.from_bytes(raw, path=f"/workspace/{args.colour}.png", width=64, height=48)
        return ToolOutput(text=f"Took a {args.colour} picture ({len(raw)} bytes).", images=[image])


class SnapExpert(Policy):
    """Takes a picture, then submits the number the task's file holds (read from the prompt's task)."""

    policy_id = "snap-expert"

    def act(self, observation: list[dict[str, Any]], info: dict[str, Any]) -> Action:
        if observation[-1]["role"] != "tool":
            return call("snapshot", {"colour": "red"})
        return call("submit", {"answer": "0"})


def make_image_env(backend: str = "local", **overrides: Any) -> SkillEnv:
    return make_env(backend, tools=["read_file", "submit"], host_tools=[Snapshot()], expert=SnapExpert, **overrides)


@pytest.fixture
def env():
    env = make_image_env()
    yield env
    env.close()


def _snap_turn(env: SkillEnv) -> list[dict[str, Any]]:
    env.reset(options={"task_id": "t0"})
    obs, *_ = env.step(call("snapshot", {"colour": "red"}))
    return obs


def test_observation_carries_the_bytes_and_the_record_only_a_reference(env):
    obs = _snap_turn(env)
    tool = obs[-1]
    assert tool["role"] == "tool" and tool["content"].startswith("Took a red picture")
    [image] = tool["images"]
    raw = base64.b64decode(image["data"])
    assert raw == png(64, 48, (200, 30, 30))
    assert image["sha256"] == "sha256:" + hashlib.sha256(raw).hexdigest() and image["bytes"] == len(raw)
    assert env.observation_space.contains(obs)  # content is still the text
    # The token budget counts the reference, not the base64.
    assert approx_tokens(obs) == approx_tokens(strip_image_data(obs)) < approx_tokens(obs[:-1]) + 100

    stored = env.trajectory.messages[-1]["images"][0]
    assert "data" not in stored and stored["sha256"] == image["sha256"] and stored["path"] == "/workspace/red.png"
    # However a record is built (a shard read back, a hand-made one), it holds no bytes.
    record = Trajectory(env_id="x-v0", env_version=0, task_id="t", messages=obs)
    assert "data" not in record.messages[-1]["images"][0] and "data" in obs[-1]["images"][0]
    assert image["data"] not in record.model_dump_json()


def test_transcripts_show_a_placeholder(env):
    obs = _snap_turn(env)
    text = transcript_text(obs)
    assert "[image image/png 64x48, " in text and "/workspace/red.png]" in text
    assert obs[-1]["images"][0]["data"] not in text
    assert transcript_text(env.trajectory.messages) == text  # the record shows the same placeholder


def test_multimodal_openai_policy_sends_the_image_after_the_tool_text(env):
    replies = [
        assistant_message(tool_calls=[tool_call("snapshot", {"colour": "blue"}, "call_a")]),
        assistant_message("0"),
    ]
    with ScriptedOpenAIServer(lambda request: replies[len(server.requests) - 1]) as server:
        policy = make_policy(f"openai:vision@{server.base_url}?images=true&temperature=0", env)
        assert isinstance(policy, OpenAIPolicy) and policy.images and policy.sampling == {"temperature": 0}
        trajectory = run_episode(env, policy, task_id="t0")
        second = server.requests[1]["messages"]
    assert trajectory.status == "ok" and trajectory.terminated
    assert "images" not in server.requests[1] and server.requests[1]["temperature"] == 0
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "user"]
    tool, shown = second[3], second[4]
    assert tool == {"role": "tool", "tool_call_id": "call_a", "content": trajectory.messages[3]["content"]}
    text_part, image_part = shown["content"]
    assert (
        text_part["type"] == "text" and "snapshot" in text_part["text"] and "/workspace/blue.png" in text_part["text"]
    )
    assert image_part["type"] == "image_url"
    head, _, data = image_part["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64" and base64.b64decode(data) == png(64, 48, (30, 30, 200))
    assert all("images" not in m for m in second)  # only fields the API knows


def test_text_only_openai_policy_sends_no_image(env):
    obs = _snap_turn(env)
    sent = to_openai_messages(obs)
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert "image_url" not in json.dumps(sent)
    # A stored record (no bytes) sends no image even with images on: there is nothing to show.
    assert to_openai_messages(env.trajectory.messages, images=True) == sent


def test_text_only_models_see_only_the_text(env):
    obs = _snap_turn(env)
    data = obs[-1]["images"][0]["data"]
    assert render(obs) == render(text_only(obs)) and data not in render(obs, training=True)
    assert canonical(obs) == canonical(text_only(obs))


def test_text_only_hf_policy_prompt_ignores_images(env):
    from test_chat_template import tiny_tokenizer

    from skillgym.policies.hf_policy import HFPolicy

    tokenizer = tiny_tokenizer()
    obs = _snap_turn(env)
    info = {"tools": env.tool_schemas}
    policy = HFPolicy(_tiny_model(tokenizer), tokenizer, max_new_tokens=4)
    ids = policy.prompt_ids(obs, info)
    assert ids == policy.prompt_ids(text_only(obs), info)
    assert obs[-1]["images"][0]["data"][:40] not in tokenizer.decode(ids)
    env.step(policy.act(obs, info))  # whatever it writes, the episode goes on


def _tiny_model(tokenizer: Any) -> Any:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


def test_rollout_store_and_export_keep_no_image_bytes(tmp_path):
    from skillgym.rollouts import RolloutConfig, run_rollouts
    from skillgym.rollouts.export import ExportConfig, export_dataset

    run = tmp_path / "run"
    run_rollouts(RolloutConfig(env=ENTRY, n_tasks=3, concurrency=2, out=run))
    shards = list(run.rglob("*.jsonl"))
    text = "".join(p.read_text() for p in shards)
    assert '"sha256": "sha256:' in text.replace('"sha256":"', '"sha256": "') and '"data"' not in text
    export_dataset(ExportConfig(run_dir=run, out=tmp_path / "data", min_reward=0.0))
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "data"))["train"]
    tools = [m for row in rows for m in row["messages"] if m["role"] == "tool"]
    assert tools and all("images" not in m or m["images"] is None for m in tools)
    assert all(m["content"].startswith("Took a red picture") for m in tools if "picture" in m["content"])


def test_play_shows_a_placeholder_for_each_image():
    from typer.testing import CliRunner

    from skillgym.cli import app

    result = CliRunner().invoke(app, ["play", ENTRY, "--task", "t0", "--backend", "local"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[image image/png 64x48, " in result.output and "/workspace/red.png]" in result.output


def test_a_text_only_server_rejecting_images_gets_a_hint(env):
    from skillgym.openai_client import OpenAIError
    from skillgym.testing import ErrorReply

    obs = _snap_turn(env)
    info = {"tools": env.tool_schemas}
    with ScriptedOpenAIServer(lambda request: ErrorReply(400, "this model does not support image input")) as server:
        with pytest.raises(OpenAIError) as failed:
            OpenAIPolicy("text-model", server.base_url, "k", images=True, max_retries=0).act(obs, info)
        assert "image_url" in str(failed.value) and "images=false" in str(failed.value)
        with pytest.raises(OpenAIError) as plain:  # no images sent: no such hint
            OpenAIPolicy("text-model", server.base_url, "k", max_retries=0).act(obs, info)
        assert "image_url" not in str(plain.value)
