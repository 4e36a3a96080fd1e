"""Teacher-generated tasks for any skill: topic graph, diverse tasks, repair, dedupe, learnability.

from skillgym.taskgen import ChatClient, GenerationConfig, generate_tasks
result = generate_tasks(skill, ChatClient.from_spec("openai:MODEL@URL", cache_dir=".cache"), GenerationConfig(n=100))
"""

from skillgym.llm import ChatClient, LLMError, StructuredOutputError, extract_json
from skillgym.taskgen.dedupe import NearDuplicateFilter, dedupe_texts
from skillgym.taskgen.generate import GenerationConfig, GenerationResult, generate_tasks, plan
from skillgym.taskgen.learnability import LearnabilityResult, filter_learnable, learnability, score_rewards
from skillgym.taskgen.topics import TopicGraph, TopicNode, grow_topic_graph

__all__ = [
    "ChatClient",
    "GenerationConfig",
    "GenerationResult",
    "LLMError",
    "LearnabilityResult",
    "NearDuplicateFilter",
    "StructuredOutputError",
    "TopicGraph",
    "TopicNode",
    "dedupe_texts",
    "extract_json",
    "filter_learnable",
    "generate_tasks",
    "grow_topic_graph",
    "learnability",
    "plan",
    "score_rewards",
]
