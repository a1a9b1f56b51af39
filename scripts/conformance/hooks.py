"""schemathesis hooks for tandem's conformance run (loaded through SCHEMATHESIS_HOOKS).

The Invitations document marks `filter` with `format: invitation-filter`: an expression in the
grammar of DESIGN.md, which no regular expression can state (calls nest). This registers a
generator of valid expressions over the seed's fields and functions, so that schemathesis's
positive cases are valid filters; its negative cases still come from the schema.
"""

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

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


# Stateful testing follows the documents' links from a create to the resource it made, so it
# reaches stored resources only when some generated creates succeed. Random provider names and
# account URIs almost never name what this instance has (the `file` provider; the account and
# organization conformance.sh entitles the customer to), so positive cases get those; negative
# cases are left as generated.
ENTITLED = {
    "joint": ("accountUri", "https://api.example.com/accounts/accounts/acct-0001"),
    "authorizedSigner": (
        "organizationUri",
        "https://api.example.com/organizations/organizations/org-0001",
    ),
}


@schemathesis.hook
def map_case(ctx, case):
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    body = case.body if isinstance(case.body, dict) else None
    label = case.operation.label
    if body is None:
        return case
    if label == "POST /bankingAdmin/customerAudienceConnections":
        provider = body.get("provider")
        if isinstance(provider, dict):
            provider["name"] = "file"
            provider.pop("connectedResourceId", None)
    elif label == "POST /invitations/invitations":
        entitled = ENTITLED.get(body.get("type"))
        if entitled is not None:
            field, uri = entitled
            body[field] = uri
    return case


# The stateful phase starts its scenarios only from operations schemathesis judges likely to
# succeed with generated data: its dependency analysis reads createInvitation's `emailAddress`
# as a reference to an "Email" resource that no operation produces, so it passes over the one
# operation that makes invitations and starts every scenario with a revoke, send or complete
# of a random id (404 each time: the links from a create to its invitation were never
# followed). The create succeeds with the values `map_case` gives it, so it is counted as a
# likely start. (Internal to the pinned schemathesis; conformance.sh checks the version.)
from schemathesis.specs.openapi import stateful as _stateful

_likely_root = _stateful.is_likely_root_transition


def _likely_root_or_invitation_create(operation, node, produced_anywhere):
    if operation.label == "POST /invitations/invitations":
        return True
    return _likely_root(operation, node, produced_anywhere)


_stateful.is_likely_root_transition = _likely_root_or_invitation_create
