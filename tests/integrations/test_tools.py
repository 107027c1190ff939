"""The tool core every adapter shares: hostile tool calls are the agent's mistakes (text,
no reward), never exceptions; the reward is the grader's; a finished episode runs nothing."""

from __future__ import annotations

import asyncio

from medagentgym.integrations.tools import OVER, ToolEpisode
from tests.integrations.conftest import FAMILY


def test_tool_calls_are_bounded_and_graded_on_the_host(gold):
    async def main() -> None:
        ep = ToolEpisode("treqs", "test", tasks=[gold["task"]], **FAMILY)
        try:
            system, goal = await ep.start(task_id=gold["task"].id)
            assert goal == gold["task"].goal and "submit" in system
            assert "validate_code" in ep.allowed and "submit" in ep.allowed
            for name, args in [("validate_code", "not json"), ("validate_code", [1, 2]),
                               ("validate_code", {"code": 7}), ("nope", {}),
                               ("validate_code", '{"code": "' + "[" * 200 + '"}'),
                               ("x" * 10_000, {"code": "1"})]:
                text = await ep.call(name, args)
                assert isinstance(text, str) and text and ep.reward == 0.0 and not ep.done
            out = await ep.call("validate_code", {"code": gold["code"]})
            assert ep.reward == 0.0 and "correct" not in out  # submit protocol: no verdict
            await ep.call("submit", {"code": "answer = -12345"})
            assert ep.done and ep.reward == 0.0
            assert await ep.call("submit", {"code": gold["code"]}) == OVER
            assert ep.reward == 0.0  # nothing runs after the end
            await ep.start(task_id=gold["task"].id)
            await ep.call("submit", {"code": gold["code"]})
            assert ep.done and ep.reward == 1.0 and ep.info["success"]
        finally:
            await ep.aclose()

    asyncio.run(main())
