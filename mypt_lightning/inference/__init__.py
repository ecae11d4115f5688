"""Inference: KV-cached generation with stop tokens, and the agent loop that runs tool calls
against a workspace."""
