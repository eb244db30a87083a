"""The JSON bodies `minitx serve` accepts, sized by its options: pydantic models that refuse a wrong
type, an unknown key, an empty list, too many texts or too long a text with a 422 naming the
field, before anything reaches the model. TranslateRequest's decode options are derived from
DecodeConfig: the same names, types and bounds as the config, the command line and the API."""

import dataclasses
import typing
from typing import Annotated

from minitx.config import DecodeConfig


def request_models(options):
    """(TranslateRequest, PredictRequest) with `options.max_texts` and `options.max_chars`."""
    from pydantic import (
        BaseModel,
        ConfigDict,
        Field,
        StringConstraints,
        create_model,
    )

    # Names apart from the field's: a class body does not see a function's local of its name.
    one_text = Annotated[str, StringConstraints(min_length=1, max_length=options.max_chars)]
    some_texts = Annotated[list[one_text], Field(min_length=1, max_length=options.max_texts)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        texts: some_texts
        # a deadline shorter than the server's --request-timeout (seconds)
        timeout_s: Annotated[float, Field(gt=0)] | None = None

    hints = typing.get_type_hints(DecodeConfig)
    decode_fields = {
        option.name: (
            hints[option.name] | None,
            Field(
                None,  # absent: the model's own setting
                ge=option.metadata.get("min"),
                gt=option.metadata.get("above"),
                le=option.metadata.get("max"),
                description=f"{option.metadata['help']}; absent: the model's decode.{option.name}",
            ),
        )
        for option in dataclasses.fields(DecodeConfig)
    }
    # Steering, one entry per text (see minitx.inference.steering): what each output must start
    # with, contain and avoid.
    phrase = Annotated[str, StringConstraints(min_length=1, max_length=options.max_chars)]
    some = Annotated[list, Field(min_length=1, max_length=options.max_texts)]
    steering_fields = {
        "target_prefix": (
            Annotated[list[Annotated[str, StringConstraints(max_length=options.max_chars)]], some]
            | None,
            Field(None, description="per text, the target text its output starts with"),
        ),
        "constraints": (
            Annotated[list[list[phrase]], some] | None,
            Field(None, description="per text, target phrases its output must contain"),
        ),
        "banned": (
            Annotated[list[list[phrase]], some] | None,
            Field(None, description="per text, target phrases its output must not contain"),
        ),
    }
    TranslateRequest = create_model(  # noqa: N806 - a class, named as one
        "TranslateRequest",
        __base__=PredictRequest,
        __doc__="Texts, decode options as the config's decode section names them, and steering "
        "(target_prefix, constraints, banned: lists with one entry per text).",
        **decode_fields,
        **steering_fields,
    )
    return TranslateRequest, PredictRequest
