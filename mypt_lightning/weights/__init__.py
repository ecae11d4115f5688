"""Weights on disk: reading and writing checkpoints (ours, Lightning's, sharded, legacy MyPT;
always ``weights_only=True``) and the Hugging Face export."""
