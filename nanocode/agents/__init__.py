"""Agents: tools, the sandboxed workspace, the agent loop, execution-grounded rollouts and the agentic eval."""
