#!/usr/bin/env python3
"""Extract the contract the published API references define, for tests/openapi_contract.rs.

Usage: scripts/extract-seed-contract.py SEED_DIR OUT_DIR

SEED_DIR holds the text renderings of the two API references (the full `NNN_hash.txt` files;
the `*.condensed.txt` copies are skipped because they drop the per-status problem tables that
name the `Inline` response schemas). For each API this writes OUT_DIR/<base>.json, where <base>
is the first path segment of the API's URLs (`bankingAdmin`, `invitations`), listing:

- operations: operationId, method, path as served (the URL without scheme and host),
  parameters (name, in, required), the request body schema, and for each response status
  (including the `4XX`/`5XX` wildcards) its schema name and header names;
- schemas: every named schema, with its fields (name, whether the seed marks it required, the
  schema it refers to, whether it is an array of it, nested `»` fields and map values).

Only the standard library is used. The text is irregular, so the script checks what it can
(every operation has an id, a method, responses; every referenced schema exists) and fails
loudly rather than write a partial list.
"""

import json
import re
import sys
from pathlib import Path

METHOD_LINE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (https?://[^/\s]+)(/\S*)$")
STATUS_LINE = re.compile(r"^([1-5][0-9][0-9]|[1-5]XX) \S.*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A property row: `name type`, `name type(format)` or `name array: [item]`, maybe `(required)`.
# Description and constraint rows never have this shape (they have more words, or a colon or
# a full stop right after the first word).
PROPERTY_ROW = re.compile(
    r"^(?P<nested>» )?(?P<name>[_A-Za-z][A-Za-z0-9_$]*) "
    r"(?P<type>array: \[(?P<item>[A-Za-z0-9_]+)\]|(?P<base>[A-Za-z][A-Za-z0-9]*)(\([-A-Za-z0-9]+\))?)"
    r"(?P<required> \(required\))?$"
)
# A map's value row: `Title (vN.N.N) schemaName`, maybe after `» `.
MAP_VALUE_ROW = re.compile(r"^(?P<nested>» )?[A-Z][^»]* \(v[0-9.]+\) (?P<schema>[A-Za-z0-9_]+)$")
SCHEMA_TITLE = re.compile(r"^(?P<title>[A-Z][^»]* \(v[0-9.]+\))$")
# Type words that are plain JSON types, not references to named schemas.
PLAIN_TYPES = {"string", "integer", "number", "boolean", "object"}


class ExtractError(Exception):
    pass


def next_nonblank(lines, i):
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def prev_nonblank(lines, i):
    while i >= 0 and not lines[i].strip():
        i -= 1
    return i


def find_operations(lines, schemas_at):
    """Returns (index of the METHOD line, operationId, index where the operation's text starts)."""
    found = []
    for i, line in enumerate(lines[:schemas_at]):
        if not METHOD_LINE.match(line):
            continue
        # The full rendering puts `operationId`, a blank line and `Code samples` before the code
        # samples; the METHOD line without ` HTTP/1.1` comes after them.
        j = i
        while j >= 0 and lines[j] != "Code samples":
            j -= 1
        if j < 0:
            raise ExtractError(f"line {i + 1}: no 'Code samples' heading before {line!r}")
        op_line = prev_nonblank(lines, j - 1)
        operation_id = lines[op_line].strip()
        if not IDENTIFIER.match(operation_id):
            raise ExtractError(f"line {op_line + 1}: {operation_id!r} is not an operationId")
        found.append((i, operation_id, op_line))
    return found


def section(lines, start, end, heading, stops):
    """The lines after `heading` (between start and end) up to the first line in `stops`."""
    for i in range(start, end):
        if lines[i] == heading:
            j = i + 1
            while j < end and lines[j] not in stops:
                j += 1
            return i + 1, j
    return None


def parse_parameters(lines, start, end):
    params, body = [], None
    bounds = section(lines, start, end, "Parameters", {"Example responses", "Responses"})
    if bounds is None:
        return params, body
    a, b = bounds
    for i in range(a, b):
        line = lines[i]
        m = re.match(r"^body (\w+)( \(required\))?$", line)
        if m:
            body = {"schema": m.group(1), "required": bool(m.group(2))}
            continue
        if i + 1 < b and lines[i + 1].startswith("in: "):
            name = line.strip()
            location = lines[i + 1][len("in: "):].strip()
            type_line = lines[i + 2] if i + 2 < b else ""
            params.append(
                {
                    "name": name,
                    "in": location,
                    "required": type_line.endswith("(required)"),
                }
            )
    return params, body


def parse_responses(lines, start, end, titles):
    responses = {}
    bounds = section(lines, start, end, "Responses", {"Response Schema"})
    if bounds is None:
        raise ExtractError(f"line {start + 1}: operation without a Responses table")
    a, b = bounds
    current = None
    for i in range(a, b):
        line = lines[i]
        if line == "StatusDescription":
            current = None
            continue
        m = STATUS_LINE.match(line)
        if m and current is None and lines[i - 1] == "StatusDescription":
            current = {"schema": None, "headers": []}
            responses[m.group(1)] = current
            continue
        if current is None:
            continue
        if line.startswith("Schema: "):
            current["schema"] = line[len("Schema: "):].strip()
        elif re.match(r"^Header[A-Za-z-]+$", line):
            current["headers"].append(line[len("Header"):])
    # `Schema: Inline` is described in the operation's "Response Schema" part, one table per
    # status ("Status Code 400", then the schema's title).
    inline = {}
    for i in range(b, end):
        m = re.match(r"^Status Code (\S+)$", lines[i])
        if m:
            k = next_nonblank(lines, i + 1)
            if lines[k] == "Property Name Description":
                k = next_nonblank(lines, k + 1)
            title = re.sub(r" object$", "", lines[k].strip())
            inline[m.group(1)] = titles.get(title)
    for status, response in responses.items():
        if response["schema"] == "Inline":
            # Without a table (e.g. getApiDoc's free-form document) the schema stays unnamed.
            response["schema"] = inline.get(status)
    return responses


def find_schemas(lines, schemas_at):
    """Returns [(name, title, first line, end line)] for the schema part of the text."""
    title_at = [i for i in range(schemas_at, len(lines)) if SCHEMA_TITLE.match(lines[i])]
    starts = [schema_block_start(lines, i, schemas_at) for i in title_at]
    found = []
    for n, i in enumerate(title_at):
        end = starts[n + 1] if n + 1 < len(title_at) else len(lines)
        head = lines[starts[n]].strip()
        if IDENTIFIER.match(head):
            name = head
        else:
            # common/link and common/links lack the name line; their text says what they are.
            name = next(
                (
                    m.group(1)
                    for m in (re.match(r"^This schema was resolved from common/(\w+)\.$", l) for l in lines[i:end])
                    if m
                ),
                None,
            )
        if name is None:
            raise ExtractError(f"line {i + 1}: cannot name the schema titled {lines[i]!r}")
        found.append((name, lines[i].strip(), i + 1, end))
    return found


def schema_block_start(lines, title_at, schemas_at):
    """Where the text of the schema whose title is at `title_at` begins (its name or example)."""
    k = prev_nonblank(lines, title_at - 1)
    # Walk back over the example (JSON lines, indented lines, a quoted string).
    while k > schemas_at and (
        lines[k].startswith((" ", "{", "}", "[", "]", '"')) or not lines[k].strip()
    ):
        k -= 1
    # k is now the name line, or the last line of the previous schema when there is none.
    if IDENTIFIER.match(lines[k].strip()) and lines[next_nonblank(lines, k + 1)][:1] in '{["':
        return k
    return k + 1


def parse_fields(lines, start, end):
    """The fields of one schema: rows after `NameDescription`, skipping the title row."""
    try:
        table = lines.index("NameDescription", start, end)
    except ValueError:
        return None  # a scalar schema: no properties table
    fields, additional = {}, None
    parent = None
    for line in lines[table + 1 : end]:
        m = PROPERTY_ROW.match(line)
        if m:
            item = m.group("item")
            base = m.group("base")
            ref = item if item else base
            field = {
                "required": bool(m.group("required")),
                "type": m.group("type"),
                "ref": None if ref in PLAIN_TYPES else ref,
                "array": bool(item),
            }
            if m.group("nested"):
                if parent is None:
                    raise ExtractError(f"nested field {line!r} without a parent")
                parent.setdefault("properties", {})[m.group("name")] = field
            else:
                fields[m.group("name")] = field
                parent = field
            continue
        m = MAP_VALUE_ROW.match(line)
        if m and not line.endswith(" object"):
            if m.group("nested"):
                parent["additional"] = m.group("schema")
            else:
                additional = m.group("schema")
    return fields, additional


def extract(path):
    lines = [l.rstrip("\n") for l in path.read_text(encoding="utf-8").splitlines()]
    try:
        schemas_at = lines.index("Schemas")
    except ValueError as e:
        raise ExtractError(f"{path}: no 'Schemas' heading") from e

    schema_blocks = find_schemas(lines, schemas_at)
    titles = {title: name for name, title, _, _ in schema_blocks}
    schemas = {}
    for name, title, start, end in schema_blocks:
        parsed = parse_fields(lines, start, end)
        if parsed is None:
            schemas[name] = {"title": title, "kind": "scalar"}
        else:
            fields, additional = parsed
            entry = {"title": title, "kind": "object", "fields": fields}
            if additional:
                entry["additional"] = additional
            schemas[name] = entry

    operations = []
    found = find_operations(lines, schemas_at)
    bases = set()
    for n, (i, operation_id, _) in enumerate(found):
        end = found[n + 1][2] if n + 1 < len(found) else schemas_at
        method, _, served = METHOD_LINE.match(lines[i]).groups()
        bases.add(served.split("/")[1])
        params, body = parse_parameters(lines, i, end)
        responses = parse_responses(lines, i, end, titles)
        op = {
            "operationId": operation_id,
            "method": method.lower(),
            "path": served,
            "parameters": params,
            "responses": responses,
        }
        if body:
            op["requestBody"] = body
        operations.append(op)

    if len(bases) != 1:
        raise ExtractError(f"{path}: operations under several base paths {sorted(bases)}")
    check_references(path, operations, schemas)
    title = lines[0].strip()
    return bases.pop(), {"source": path.name, "title": title, "operations": operations, "schemas": schemas}


def check_references(path, operations, schemas):
    def need(name, where):
        if name is not None and name not in schemas:
            raise ExtractError(f"{path}: {where} refers to unknown schema {name!r}")

    for op in operations:
        if not op["responses"]:
            raise ExtractError(f"{path}: {op['operationId']} has no responses")
        need(op.get("requestBody", {}).get("schema"), op["operationId"])
        for status, response in op["responses"].items():
            need(response["schema"], f"{op['operationId']} {status}")

    def walk(fields, where):
        for name, field in fields.items():
            need(field["ref"], f"{where}.{name}")
            need(field.get("additional"), f"{where}.{name}")
            walk(field.get("properties", {}), f"{where}.{name}")

    for name, schema in schemas.items():
        walk(schema.get("fields", {}), name)
        need(schema.get("additional"), name)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    seed_dir, out_dir = Path(argv[1]), Path(argv[2])
    sources = sorted(p for p in seed_dir.glob("*.txt") if not p.name.endswith(".condensed.txt") and p.name != "README.txt")
    if not sources:
        print(f"no seed text files in {seed_dir}", file=sys.stderr)
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        try:
            base, contract = extract(source)
        except ExtractError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        target = out_dir / f"{base}.json"
        target.write_text(json.dumps(contract, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(
            f"{source.name}: {len(contract['operations'])} operations, "
            f"{len(contract['schemas'])} schemas -> {target}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
