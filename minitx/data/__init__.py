"""Data: sources → tokenizer → token-budget batches."""
