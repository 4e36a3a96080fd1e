"""The topic graph: what a skill is about, grown from its description and body by the teacher.

The root is the skill; the teacher names its main areas of use, then splits each into
subtopics. Tasks are drawn across the leaves, so a skill with a narrow description but a
broad body still gets tasks about everything it teaches.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from skillgym.llm import ChatClient
from skillgym.taskgen.schemas import TopicList
from skillgym.types import SkillSpec

TOPIC_SYSTEM = (
    "You design evaluation data for AI assistants. You read the instructions of an agent skill and map what "
    "it covers. Reply with only JSON."
)


class TopicNode(BaseModel):
    id: str
    name: str
    description: str = ""
    parent: str | None = None
    depth: int = 0


class TopicGraph(BaseModel):
    """A tree of topics (kept as nodes with parent links so it serializes flat)."""

    skill: str
    nodes: list[TopicNode] = Field(default_factory=list)

    def children(self, node_id: str | None) -> list[TopicNode]:
        return [n for n in self.nodes if n.parent == node_id]

    def leaves(self) -> list[TopicNode]:
        parents = {n.parent for n in self.nodes}
        return [n for n in self.nodes if n.id not in parents and n.depth > 0]

    def path(self, node: TopicNode) -> list[str]:
        by_id = {n.id: n for n in self.nodes}
        names, current = [], node
        while current is not None and current.depth > 0:
            names.append(current.name)
            current = by_id.get(current.parent) if current.parent else None
        return list(reversed(names))


def skill_brief(skill: SkillSpec, max_chars: int = 8000) -> str:
    body = skill.instructions.strip()
    if len(body) > max_chars:
        body = body[:max_chars] + "\n[... truncated ...]"
    return f"Skill name: {skill.name}\nDescription: {skill.description}\n\nInstructions:\n{body}"


def grow_topic_graph(
    skill: SkillSpec, client: ChatClient, *, breadth: int = 6, fanout: int = 3, depth: int = 2, max_repairs: int = 3
) -> TopicGraph:
    """Root -> ``breadth`` topics -> ``fanout`` subtopics each (``depth`` 1 stops at topics)."""
    graph = TopicGraph(skill=skill.name, nodes=[TopicNode(id="root", name=skill.name, description=skill.description)])
    frontier = [graph.nodes[0]]
    for level in range(1, depth + 1):
        next_frontier = []
        for parent in frontier:
            count = breadth if level == 1 else fanout
            found = _ask_topics(skill, client, parent, graph, count, max_repairs)
            for i, item in enumerate(found.topics[:count]):
                node = TopicNode(
                    id=f"{parent.id}.{i}" if parent.id != "root" else str(i),
                    name=item.name.strip(),
                    description=item.description.strip(),
                    parent=parent.id,
                    depth=level,
                )
                graph.nodes.append(node)
                next_frontier.append(node)
        frontier = next_frontier
    return graph


def _ask_topics(
    skill: SkillSpec, client: ChatClient, parent: TopicNode, graph: TopicGraph, count: int, max_repairs: int
) -> TopicList:
    if parent.depth == 0:
        ask = (
            f"List {count} distinct areas where a user would need this skill: the kinds of requests it is "
            "for, the situations and inputs it handles, and its important rules or pitfalls."
        )
    else:
        path = " > ".join(graph.path(parent))
        ask = (
            f"Within the area '{path}' ({parent.description}), list {count} narrower, concrete subtopics: "
            "specific situations, inputs or decisions a request could be about."
        )
    schema_hint = json.dumps({"topics": [{"name": "short name", "description": "one sentence"}]})
    messages = [
        {"role": "system", "content": TOPIC_SYSTEM},
        {"role": "user", "content": f"{skill_brief(skill)}\n\n{ask}\nReply with JSON like {schema_hint}."},
    ]

    def check(value: TopicList) -> None:
        if len(value.topics) < min(2, count):
            raise ValueError(f"give at least {min(2, count)} topics, not {len(value.topics)}")

    value, _ = client.complete_json(messages, TopicList, max_repairs=max_repairs, check=check)
    return value
