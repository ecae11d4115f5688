"""mypt-lightning: the MyPT 750M SFT curriculum on PyTorch Lightning + Hydra.

>>> from mypt_lightning import load_model          # doctest: +SKIP
>>> model = load_model("runs/phase3_chat_sft/export")  # doctest: +SKIP
>>> logits = model(input_ids)                       # doctest: +SKIP

Heavy submodules load lazily, so ``import mypt_lightning.tokens.special_tokens`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "mypt_lightning.weights.checkpoint",
    "load_weights": "mypt_lightning.weights.checkpoint",
    "save_exported": "mypt_lightning.weights.checkpoint",
    "MyPT": "mypt_lightning.model",
    "MyPTConfig": "mypt_lightning.model",
    "MyPTLitModule": "mypt_lightning.training.lit_module",
    "get_tokenizer": "mypt_lightning.tokens.tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mypt_lightning' has no attribute {name!r}")
