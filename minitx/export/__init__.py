"""Export a trained run to other engines: CTranslate2 (translation) and ONNX (encoders)."""
