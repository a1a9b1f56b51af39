//! The generated OpenAPI documents agree with the published API references.
//!
//! `tests/contract/{bankingAdmin,invitations}.json` list what the references define (produced by
//! `scripts/extract-seed-contract.py`): operations, paths, parameters, response statuses and
//! headers, and schema fields. This test compares both generated documents with them and fails
//! on every difference that `tests/contract/deviations.json` does not record, and on every
//! recorded deviation that no longer occurs. Each deviation names the bullet of
//! `docs/decisions.md` that decided it. The comparison rules are in docs/decisions.md,
//! "Generated documents and the seeds".

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tandem::http::invitations::doc::InvitationsApi;
use tandem::http::openapi::AdminApi;
use utoipa::OpenApi;

const ADMIN_CONTRACT: &str = include_str!("contract/bankingAdmin.json");
const INVITATIONS_CONTRACT: &str = include_str!("contract/invitations.json");
const DEVIATIONS: &str = include_str!("contract/deviations.json");
const DECISIONS: &str = include_str!("../docs/decisions.md");

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Whether a schema describes a request body (required-ness must match the seed exactly) or a
/// response (the service may promise more fields than the seed requires).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Direction {
    Request,
    Response,
}

struct Comparison<'a> {
    api: &'a str,
    doc: &'a Value,
    seed_schemas: &'a serde_json::Map<String, Value>,
    differences: BTreeSet<String>,
    visited: HashSet<(String, Direction, String)>,
}

impl Comparison<'_> {
    fn differ(&mut self, text: String) {
        self.differences.insert(format!("{}: {text}", self.api));
    }

    fn resolve<'v>(&'v self, schema: &'v Value) -> &'v Value {
        resolve(self.api, self.doc, schema)
    }

    /// A body that is one of several object shapes (e.g. createInvitation, one per invitation
    /// type) is compared as one object: a field exists when any shape has it, and is required
    /// when every shape requires it.
    fn merge_variants(&self, schema: &Value) -> Value {
        let Some(variants) = ["oneOf", "anyOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array))
        else {
            return schema.clone();
        };
        let mut properties = serde_json::Map::new();
        let mut required: Option<BTreeSet<String>> = None;
        for variant in variants.iter().map(|v| self.resolve(v)) {
            if let Some(props) = variant.get("properties").and_then(Value::as_object) {
                for (name, property) in props {
                    properties.entry(name.clone()).or_insert(property.clone());
                }
            }
            let names: BTreeSet<String> = variant
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            required = Some(match required {
                Some(so_far) => so_far.intersection(&names).cloned().collect(),
                None => names,
            });
        }
        serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required.unwrap_or_default(),
        })
    }

    fn is_object_schema(&self, name: &str) -> bool {
        self.seed_schemas
            .get(name)
            .is_some_and(|s| s["kind"] == "object")
    }

    /// Compares the seed's schema `seed_name` with the generated schema `generated`.
    fn schema(&mut self, seed_name: &str, generated: &Value, direction: Direction) {
        let generated = self.resolve(generated).clone();
        let key = (seed_name.to_owned(), direction, generated.to_string());
        if !self.visited.insert(key) {
            return;
        }
        let seed = self.seed_schemas[seed_name].clone();
        if seed["kind"] != "object" {
            return;
        }
        if let Some(values) = seed.get("additional").and_then(Value::as_str) {
            self.map_values(
                &format!("schema {seed_name}"),
                values,
                &generated,
                direction,
            );
        }
        let fields = seed["fields"].as_object().cloned().unwrap_or_default();
        self.fields(
            &format!("schema {seed_name}"),
            "",
            &fields,
            &generated,
            direction,
        );
    }

    /// A map's values (`additionalProperties`): compared when the generated document describes
    /// them; a free-form object there promises nothing, so there is nothing to compare.
    fn map_values(&mut self, at: &str, values: &str, generated: &Value, direction: Direction) {
        if !self.is_object_schema(values) {
            return;
        }
        match generated.get("additionalProperties") {
            Some(schema) if schema.is_object() => self.schema(values, schema, direction),
            _ if generated.get("properties").is_some() => self.differ(format!(
                "{at}: the seed describes a map of {values}, the generated document fixed fields"
            )),
            _ => {}
        }
    }

    fn fields(
        &mut self,
        at: &str,
        prefix: &str,
        fields: &serde_json::Map<String, Value>,
        generated: &Value,
        direction: Direction,
    ) {
        let generated = &self.merge_variants(generated);
        let properties = generated
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: BTreeSet<&str> = generated
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if properties.is_empty() && !fields.is_empty() {
            let names: Vec<String> = fields.keys().map(|k| format!("{prefix}{k}")).collect();
            self.differ(format!(
                "{at}: a free-form object in the generated document; the seed lists {}",
                names.join(", ")
            ));
            return;
        }
        for (name, field) in fields {
            let path = format!("{prefix}{name}");
            let Some(property) = properties.get(name) else {
                self.differ(format!("{at}: field {path} missing"));
                continue;
            };
            let seed_required = field["required"] == true;
            let generated_required = required.contains(name.as_str());
            if seed_required && !generated_required {
                self.differ(format!(
                    "{at}: field {path} is required in the seed, optional in the generated document"
                ));
            }
            if !seed_required && generated_required && direction == Direction::Request {
                self.differ(format!(
                    "{at}: field {path} is optional in the seed, required in the generated request body"
                ));
            }
            let mut value = self.resolve(property).clone();
            if field["array"] == true {
                if value.get("type") != Some(&Value::from("array")) {
                    self.differ(format!("{at}: field {path} is an array in the seed"));
                    continue;
                }
                value = self.resolve(&value["items"]).clone();
            }
            if let Some(reference) = field["ref"].as_str()
                && self.is_object_schema(reference)
            {
                self.schema(reference, &value, direction);
            }
            if let Some(nested) = field.get("properties").and_then(Value::as_object) {
                self.fields(at, &format!("{path}."), nested, &value, direction);
            }
            if let Some(values) = field.get("additional").and_then(Value::as_str) {
                self.map_values(&format!("{at}: field {path}"), values, &value, direction);
            }
        }
        for name in properties.keys() {
            if !fields.contains_key(name) {
                self.differ(format!("{at}: field {prefix}{name} is not in the seed"));
            }
        }
    }

    fn operation(&mut self, seed: &Value, generated: &Value) {
        let id = seed["operationId"].as_str().expect("operationId");

        let key = |name: &str, location: &str| {
            if location == "header" {
                (location.to_owned(), name.to_ascii_lowercase())
            } else {
                (location.to_owned(), name.to_owned())
            }
        };
        let seed_params: BTreeMap<(String, String), (&str, bool)> = seed["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                let (name, location) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                (key(name, location), (name, p["required"] == true))
            })
            .collect();
        let generated_params: BTreeMap<(String, String), (&str, bool)> = generated
            .get("parameters")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let (name, location) =
                            (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                        (key(name, location), (name, p["required"] == true))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for ((location, _), (name, required)) in &seed_params {
            match generated_params.get(&key(name, location)) {
                None => self.differ(format!("{id}: {location} parameter {name} missing")),
                Some((_, generated_required)) if generated_required != required => {
                    self.differ(format!(
                        "{id}: {location} parameter {name} is {} in the generated document, {} in the seed",
                        if *generated_required { "required" } else { "optional" },
                        if *required { "required" } else { "optional" },
                    ))
                }
                Some(_) => {}
            }
        }
        for ((location, k), (name, _)) in &generated_params {
            if !seed_params.contains_key(&(location.clone(), k.clone())) {
                self.differ(format!(
                    "{id}: {location} parameter {name} is not in the seed"
                ));
            }
        }

        match (seed.get("requestBody"), generated.get("requestBody")) {
            (Some(body), Some(generated_body)) => {
                if body["required"] == true && generated_body["required"] != true {
                    self.differ(format!("{id}: request body is optional"));
                }
                match first_content_schema(generated_body) {
                    Some(schema) => {
                        let name = body["schema"].as_str().expect("body schema");
                        self.schema(name, schema, Direction::Request);
                    }
                    None => self.differ(format!("{id}: request body has no schema")),
                }
            }
            (Some(_), None) => self.differ(format!("{id}: request body missing")),
            (None, Some(_)) => self.differ(format!("{id}: request body is not in the seed")),
            (None, None) => {}
        }

        let seed_responses = seed["responses"].as_object().expect("responses");
        let empty = serde_json::Map::new();
        let generated_responses = generated
            .get("responses")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (status, response) in seed_responses {
            let Some(generated_response) = generated_responses.get(status) else {
                self.differ(format!("{id}: response {status} missing"));
                continue;
            };
            let generated_headers: BTreeSet<String> = generated_response
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
                .unwrap_or_default();
            let seed_headers: BTreeSet<String> = response["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| h.as_str().unwrap().to_ascii_lowercase())
                .collect();
            for header in seed_headers.difference(&generated_headers) {
                self.differ(format!("{id}: response {status} header {header} missing"));
            }
            for header in generated_headers.difference(&seed_headers) {
                self.differ(format!(
                    "{id}: response {status} header {header} is not in the seed"
                ));
            }
            if let Some(name) = response["schema"].as_str() {
                match first_content_schema(generated_response) {
                    Some(schema) => self.schema(name, schema, Direction::Response),
                    None => self.differ(format!("{id}: response {status} has no body schema")),
                }
            }
        }
        for status in generated_responses.keys() {
            if seed_responses.contains_key(status) {
                continue;
            }
            // The seed's `4XX` / `5XX` stand for every status of their class that it does not
            // list on its own; documenting one of them specifically is a refinement.
            let class = format!("{}XX", &status[..1]);
            if !seed_responses.contains_key(&class) {
                self.differ(format!("{id}: response {status} is not in the seed"));
            }
        }
    }
}

/// Follows `$ref`s, and looks through the `oneOf: [null, X]` utoipa writes for `Option<X>` and
/// single-element `allOf`s, to the schema that describes the value.
fn resolve<'v>(api: &str, doc: &'v Value, mut schema: &'v Value) -> &'v Value {
    loop {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{api}: unexpected $ref {reference}"));
            schema = doc
                .pointer(&format!("/components/schemas/{name}"))
                .unwrap_or_else(|| panic!("{api}: dangling $ref {reference}"));
            continue;
        }
        let variants = ["oneOf", "anyOf", "allOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array));
        if let Some(variants) = variants {
            let not_null: Vec<&Value> = variants
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if let [only] = not_null.as_slice() {
                schema = only;
                continue;
            }
        }
        return schema;
    }
}

fn first_content_schema(body: &Value) -> Option<&Value> {
    body.get("content")?
        .as_object()?
        .values()
        .next()?
        .get("schema")
}

fn operations(doc: &Value) -> BTreeMap<String, (String, String, Value)> {
    let mut found = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let id = op["operationId"].as_str().expect("operationId").to_owned();
                found.insert(id, (method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    found
}

/// Every difference between one generated document and the seed's contract.
fn differences(api: &str, doc: &Value, contract: &Value) -> BTreeSet<String> {
    let seed_schemas = contract["schemas"].as_object().expect("schemas");
    let mut comparison = Comparison {
        api,
        doc,
        seed_schemas,
        differences: BTreeSet::new(),
        visited: HashSet::new(),
    };
    let mut generated = operations(doc);
    for seed in contract["operations"].as_array().expect("operations") {
        let id = seed["operationId"].as_str().expect("operationId");
        let Some((method, path, op)) = generated.remove(id) else {
            comparison.differ(format!("{id}: operation missing"));
            continue;
        };
        let (seed_method, seed_path) = (
            seed["method"].as_str().unwrap(),
            seed["path"].as_str().unwrap(),
        );
        if method != seed_method || path != seed_path {
            comparison.differ(format!(
                "{id}: served as {} {path}, the seed has {} {seed_path}",
                method.to_uppercase(),
                seed_method.to_uppercase()
            ));
        }
        comparison.operation(seed, &op);
    }
    for (id, (method, path, _)) in generated {
        comparison.differ(format!(
            "{id}: operation {} {path} is not in the seed",
            method.to_uppercase()
        ));
    }
    comparison.differences
}

/// The generated documents, by API name.
fn documents() -> [(&'static str, Value); 2] {
    [
        ("bankingAdmin", serde_json::to_value(AdminApi::openapi())),
        (
            "invitations",
            serde_json::to_value(InvitationsApi::openapi()),
        ),
    ]
    .map(|(api, doc)| (api, doc.unwrap_or_else(|e| panic!("{api} document: {e}"))))
}

fn all_differences() -> BTreeSet<String> {
    let [(admin_api, admin), (invitations_api, invitations)] = documents();
    let admin_contract: Value = serde_json::from_str(ADMIN_CONTRACT).expect("bankingAdmin.json");
    let invitations_contract: Value =
        serde_json::from_str(INVITATIONS_CONTRACT).expect("invitations.json");
    let mut all = differences(admin_api, &admin, &admin_contract);
    all.extend(differences(
        invitations_api,
        &invitations,
        &invitations_contract,
    ));
    all
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Deviation {
    difference: String,
    decision: String,
}

fn deviations() -> Vec<Deviation> {
    serde_json::from_str(DEVIATIONS)
        .expect("tests/contract/deviations.json is a list of deviations")
}

#[test]
fn generated_documents_agree_with_the_seeds_up_to_recorded_decisions() {
    let found = all_differences();
    let recorded: BTreeSet<String> = deviations().into_iter().map(|d| d.difference).collect();
    let unrecorded: Vec<&String> = found.difference(&recorded).collect();
    let stale: Vec<&String> = recorded.difference(&found).collect();
    let mut report = String::new();
    if !unrecorded.is_empty() {
        report.push_str(
            "Differences from the seeds that no decision records (fix the document, or add a \
             decision to docs/decisions.md and an entry to tests/contract/deviations.json):\n",
        );
        for d in &unrecorded {
            report.push_str(&format!("  {d}\n"));
        }
    }
    if !stale.is_empty() {
        report.push_str(
            "Recorded deviations that no longer occur (remove them from \
             tests/contract/deviations.json):\n",
        );
        for d in &stale {
            report.push_str(&format!("  {d}\n"));
        }
    }
    assert!(report.is_empty(), "\n{report}");
}

#[test]
fn every_deviation_names_a_decision_that_is_written_down() {
    let deviations = deviations();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for deviation in &deviations {
        if !seen.insert(deviation.difference.as_str()) {
            problems.push(format!("recorded twice: {}", deviation.difference));
        }
        if deviation.decision.trim().len() < 8 || !DECISIONS.contains(deviation.decision.as_str()) {
            problems.push(format!(
                "decision {:?} (for {:?}) is not text of docs/decisions.md",
                deviation.decision, deviation.difference
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_contract_lists_every_operation_of_the_seeds() {
    // The counts checked by hand against the seed text: one `METHOD URL` line per operation.
    for (contract, expected) in [(ADMIN_CONTRACT, 7), (INVITATIONS_CONTRACT, 11)] {
        let contract: Value = serde_json::from_str(contract).unwrap();
        let ids: BTreeSet<&str> = contract["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), expected, "{}", contract["title"]);
    }
}

/// The comparison itself notices what it must: a generated document with a parameter, a status
/// and a schema field taken away differs from the seed in exactly those three places.
#[test]
fn the_comparison_reports_removed_parameters_statuses_and_fields() {
    let contract: Value = serde_json::from_str(ADMIN_CONTRACT).unwrap();
    let doc = serde_json::to_value(AdminApi::openapi()).unwrap();
    let baseline = differences("bankingAdmin", &doc, &contract);

    let mut broken = doc.clone();
    let get = broken
        .pointer_mut("/paths/~1bankingAdmin~1customerAudienceConnections~1{customerAudienceConnectionId}/get")
        .expect("get operation");
    get["parameters"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "If-None-Match");
    get["responses"].as_object_mut().unwrap().remove("404");
    broken
        .pointer_mut("/components/schemas/userAccountReference/properties")
        .and_then(Value::as_object_mut)
        .expect("userAccountReference properties")
        .remove("username");
    let found = differences("bankingAdmin", &broken, &contract);
    let new: BTreeSet<&String> = found.difference(&baseline).collect();
    let expected: BTreeSet<String> = [
        "bankingAdmin: getCustomerAudienceConnection: header parameter If-None-Match missing",
        "bankingAdmin: getCustomerAudienceConnection: response 404 missing",
        "bankingAdmin: schema userAccountReference: field username missing",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(new, expected.iter().collect::<BTreeSet<_>>());
}

/// Clients and schemathesis follow the links; one that names a parameter the target does not
/// take, or a response field that is not there, would send them requests that fail.
#[test]
fn every_link_takes_fields_of_its_response_into_inputs_of_its_target() {
    let mut checked = 0;
    for (api, doc) in documents() {
        let operations = operations(&doc);
        for (id, (_, _, op)) in &operations {
            for (status, response) in op["responses"].as_object().expect("responses") {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let context = format!("{api}: link {name} from {id} {status}");
                    let source = first_content_schema(response)
                        .map(|schema| resolve(api, &doc, schema))
                        .unwrap_or_else(|| panic!("{context}: the response has no body"));
                    let target_id = link["operationId"].as_str().expect("operationId");
                    let Some((_, _, target)) = operations.get(target_id) else {
                        panic!("{context}: {target_id} is not an operation");
                    };
                    let read_from_source = |expression: &Value| {
                        let field = expression
                            .as_str()
                            .and_then(|e| e.strip_prefix("$response.body#/"));
                        assert!(
                            field.is_some_and(|f| source["properties"].get(f).is_some()),
                            "{context}: the response has no {expression}"
                        );
                    };
                    for (parameter, expression) in
                        link["parameters"].as_object().into_iter().flatten()
                    {
                        assert!(
                            target["parameters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|p| p["name"] == *parameter),
                            "{context}: {target_id} takes no parameter {parameter}"
                        );
                        read_from_source(expression);
                    }
                    if let Some(body) = link["requestBody"].as_object() {
                        let input = first_content_schema(&target["requestBody"])
                            .map(|schema| resolve(api, &doc, schema))
                            .unwrap_or_else(|| panic!("{context}: {target_id} takes no body"));
                        for (field, expression) in body {
                            assert!(
                                input["properties"].get(field).is_some(),
                                "{context}: the body of {target_id} has no {field}"
                            );
                            read_from_source(expression);
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // The admin create's links and the invitation create's and verification's.
    assert!(checked >= 14, "only {checked} links");
}
