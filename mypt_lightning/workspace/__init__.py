"""The agent's workspace: a confined folder of documents (``store``) and the analysis tools
the agent may call on it (``analysis``)."""
