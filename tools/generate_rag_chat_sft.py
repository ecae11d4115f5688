#!/usr/bin/env python
"""Phase 3 RAG chat data over the workspace documents (context, think, cite). See --help."""
import sys

from mypt_lightning.generators.rag_chat import cli

if __name__ == "__main__":
    sys.exit(cli())
