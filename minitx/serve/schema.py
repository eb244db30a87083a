"""The JSON bodies `minitx serve` accepts, sized by its options: pydantic models that refuse a wrong
type, an unknown key, an empty list, too many texts or too long a text with a 422 naming the
field, before anything reaches the model."""

from typing import Annotated


def request_models(options):
    """(TranslateRequest, PredictRequest) with `options.max_texts` and `options.max_chars`."""
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    # Names apart from the field's: a class body does not see a function's local of its name.
    one_text = Annotated[str, StringConstraints(min_length=1, max_length=options.max_chars)]
    some_texts = Annotated[list[one_text], Field(min_length=1, max_length=options.max_texts)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        texts: some_texts

    class TranslateRequest(PredictRequest):
        """Decode options as the config's decode section names them; absent: the model's own."""

        beam_size: int | None = Field(None, ge=1, le=64)
        n_best: int | None = Field(None, ge=1, le=64)
        length_penalty: float | None = Field(None, ge=0.0)
        sample: bool | None = None
        temperature: float | None = Field(None, gt=0.0)
        top_k: int | None = Field(None, ge=1)
        top_p: float | None = Field(None, gt=0.0, le=1.0)
        seed: int | None = Field(None, ge=0)

    return TranslateRequest, PredictRequest
