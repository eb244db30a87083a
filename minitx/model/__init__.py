"""The Transformer, read top to bottom: attention → positions → layers → transformer."""
