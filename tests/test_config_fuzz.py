"""Whatever a YAML file holds, loading it gives a Config or one UserError line, never a crash."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from minitx.config import Config, config_from_dict
from minitx.errors import UserError

SECTIONS = {f.name: f for f in dataclasses.fields(Config)}
KEYS = sorted(
    {
        f"{s}.{k.name}"
        for s, f in SECTIONS.items()
        if dataclasses.is_dataclass(f.default_factory)
        for k in dataclasses.fields(f.default_factory)
    }
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def raw_configs(draw):
    raw: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=6)):
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = draw(values)
    if draw(st.booleans()):
        raw[draw(st.text(max_size=8))] = draw(values)
    return raw


@settings(max_examples=300, deadline=None)
@given(raw_configs())
def test_loader_never_crashes(raw):
    try:
        cfg = config_from_dict(raw)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg, Config)
        assert cfg.model.d_model % cfg.model.n_heads == 0
