"""schemathesis hooks for tandem's conformance run (loaded through SCHEMATHESIS_HOOKS).

The Invitations document marks `filter` with `format: invitation-filter`: an expression in the
grammar of DESIGN.md, which no regular expression can state (calls nest). This registers a
generator of valid expressions over the seed's fields and functions, so that schemathesis's
positive cases are valid filters; its negative cases still come from the schema.
"""

import schemathesis
from hypothesis import strategies as st

# The seed's filterable fields and the functions each allows (getInvitations `filter`).
ENUM_FIELDS = {
    "state": ["sent", "accepted", "completed", "revoked", "expired"],
    "type": ["joint", "authorizedSigner", "productPromotion"],
}
TEXT_FIELDS = ["emailAddress", "accountUri", "organizationUri", "createdBy", "customerId"]

# Quoted values may hold anything printable but control characters; `"` and `\` are escaped.
text_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20
).map(lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')


@st.composite
def enum_call(draw):
    field = draw(st.sampled_from(sorted(ENUM_FIELDS)))
    values = ENUM_FIELDS[field]
    function = draw(st.sampled_from(["eq", "ne", "in"]))
    if function == "in":
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
        return f"in({field},{'|'.join(chosen)})"
    return f"{function}({field},{draw(st.sampled_from(values))})"


@st.composite
def text_call(draw):
    field = draw(st.sampled_from(TEXT_FIELDS))
    function = draw(st.sampled_from(["eq", "contains", "search"]))
    return f"{function}({field},{draw(text_value)})"


leaf = st.one_of(enum_call(), text_call())
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: f"and({','.join(parts)})"),
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: f"or({','.join(parts)})"),
        inner.map(lambda part: f"not({part})"),
    ),
    max_leaves=6,
)

schemathesis.openapi.format("invitation-filter", filters)
