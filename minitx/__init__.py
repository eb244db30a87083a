"""minitx: train and evaluate small encoder-decoder Transformers from one YAML file."""

__version__ = "0.1.0"
