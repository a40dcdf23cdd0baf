//! Unit tests of the rewrite rules, one per rule; the corpus cases are golden tests under
//! `tests/fixtures/dialects/`.

use super::*;
use crate::diagnostics::Severity;

fn run_with(text: &str, type_map: TypeMap) -> (Node, Dialect, Vec<Diagnostic>) {
    let source = SourceFile::in_memory("c/contract.yaml", text);
    let mut diags = Vec::new();
    let root = crate::read::parse(&source.display, text, &mut diags).expect("test YAML parses");
    let options = Options { type_map, load_subcontracts: false };
    match normalize(&source, root, &options, &mut diags) {
        Outcome::Node(n) => (n.root, n.dialect, diags),
        Outcome::Skipped(f) => panic!("skipped as {f:?}"),
    }
}

fn run(text: &str) -> (Node, Dialect, Vec<Diagnostic>) {
    run_with(text, TypeMap::new())
}

fn json(node: &Node, pointer: &str) -> serde_json::Value {
    refs::json_pointer(node, pointer).map_or(serde_json::Value::Null, Node::to_json)
}

const SEPT: &str = "contract_version: \"1.2.3\"\nversion: \"1.2.3\"\nnode_name: consul_adapter\nnode_type: effect\n\
description: d\ninput_model: ModelIn\noutput_model: ModelOut\n";

#[test]
fn our_dialect_is_untouched() {
    let text = "contract_version: {major: 1, minor: 0, patch: 0}\nnode_name: node_a_effect\nnode_type: effect\n\
description: d\ninput_model: M\noutput_model: M\ndefinitions: {M: {type: object}}\n";
    let (root, dialect, diags) = run(text);
    assert_eq!(dialect, Dialect::Onex);
    assert!(diags.is_empty());
    assert_eq!(json(&root, "/node_type"), "effect", "our dialect keeps its strict node_type check");
}

#[test]
fn string_versions_node_type_and_name() {
    let (root, dialect, diags) = run(SEPT);
    assert_eq!(dialect, Dialect::Sept2025);
    assert_eq!(json(&root, "/contract_version"), serde_json::json!({"major": 1, "minor": 2, "patch": 3}));
    assert_eq!(json(&root, "/version/patch"), 3);
    assert_eq!(json(&root, "/node_type"), "EFFECT");
    assert_eq!(json(&root, "/node_name"), "node_consul_adapter_effect");
    let renamed = diags.iter().find(|d| d.code == Code::Renamed).expect("rename reported");
    assert_eq!(renamed.pos, Pos::new(3, 12));
}

#[test]
fn generic_node_type_and_version_only() {
    let text = "version: {major: 0, minor: 1, patch: 0}\nname: Node-Thing\nnode_type: COMPUTE_GENERIC\n";
    let (root, dialect, _) = run(text);
    assert_eq!(dialect, Dialect::Head2026);
    assert_eq!(json(&root, "/contract_version/minor"), 1);
    assert_eq!(json(&root, "/node_type"), "COMPUTE");
    assert_eq!(json(&root, "/node_name"), "node_thing_compute");
    assert!(json(&root, "/description").as_str().unwrap().contains("no description"));
}

#[test]
fn bad_string_version_is_located() {
    let (_, _, diags) = run("contract_version: \"one\"\nnode_type: EFFECT\nname: x\n");
    let d = diags.iter().find(|d| d.code == Code::WrongType).unwrap();
    assert_eq!((d.pos, d.path.as_str()), (Pos::new(1, 19), "contract_version"));
}

#[test]
fn input_model_map_is_external_unless_defined() {
    let text = "contract_version: {major: 1, minor: 0, patch: 0}\nname: node_x_effect\nnode_type: EFFECT_GENERIC\n\
input_model: {name: ModelIn, module: pkg.models}\noutput_model: {name: ModelOut, module: pkg.models}\n\
definitions:\n  ModelOut: {type: object, properties: {ok: {type: boolean}}}\n";
    let (root, _, diags) = run(text);
    assert_eq!(json(&root, "/input_model"), "ModelIn");
    assert_eq!(json(&root, "/definitions/ModelIn/$ref"), "#/dependencies/external_model_in");
    assert_eq!(json(&root, "/definitions/ModelOut/type"), "object");
    let deps = json(&root, "/dependencies");
    assert_eq!(deps[0]["rust_type"], "serde_json::Value");
    assert_eq!(deps[0]["module"], "pkg.models");
    let warning = diags.iter().find(|d| d.code == Code::UnmappedExternalType).unwrap();
    assert!(warning.message.contains("`ModelIn`"));
    assert_eq!(warning.pos, Pos::new(4, 14));
}

#[test]
fn type_map_maps_externals_without_warning() {
    let mut map = TypeMap::new();
    map.insert("ModelIn", "onex_runtime::event::OnexEvent").unwrap();
    let text = "contract_version: {major: 1, minor: 0, patch: 0}\nname: node_x_effect\nnode_type: EFFECT_GENERIC\n\
input_model: {name: ModelIn, module: pkg.models}\noutput_model: {name: ModelIn, module: pkg.models}\n";
    let (root, _, diags) = run_with(text, map);
    assert_eq!(json(&root, "/dependencies/0/rust_type"), "onex_runtime::event::OnexEvent");
    assert!(diags.iter().all(|d| d.code != Code::UnmappedExternalType));
}

#[test]
fn grouped_definitions_flatten_and_refs_follow() {
    let text = format!(
        "{SEPT}{}",
        r#"definitions:
  models:
    ModelIn:
      type: object
      properties:
        m: {$ref: '#/definitions/enums/EnumM'}
    ModelOut: {type: object}
  enums:
    EnumM: {type: string, enum: [a, b]}
  schemas: {}
"#
    );
    let (root, _, diags) = run(&text);
    assert!(diags.iter().all(|d| d.severity != Severity::Error), "{diags:?}");
    assert_eq!(json(&root, "/definitions/ModelIn/properties/m/$ref"), "#/definitions/EnumM");
    assert_eq!(json(&root, "/definitions/EnumM/enum"), serde_json::json!(["a", "b"]));
    assert!(json(&root, "/definitions/models").is_null());
}

#[test]
fn group_collision_reports_both_locations() {
    let text = format!(
        "{SEPT}definitions:\n  models:\n    ModelIn: {{type: object}}\n  enums:\n    ModelIn: {{type: string}}\n"
    );
    let (_, _, diags) = run(&text);
    let d = diags.iter().find(|d| d.code == Code::NameCollision).unwrap();
    assert_eq!(d.pos, Pos::new(12, 5));
    assert_eq!(d.related[0].pos, Pos::new(10, 5));
}

#[test]
fn pydantic_types() {
    let text = format!(
        "{SEPT}{}",
        r#"definitions:
  ModelIn:
    type: object
    properties:
      id: {type: uuid, default_factory: uuid4}
      at: {type: datetime}
      f: {type: float, ge: 0.0, le: 1.0}
      s: {type: string, nullable: true, default: null, min_length: 1}
      d: {type: object, key_type: string, value_type: any}
      e: {type: object, key_type: string, value_type: integer}
      l: {type: array, item_type: string}
      k: {type: enum, enum: [x, y], enum_class: EnumK, module: m}
      r: {type: ref, ref: ModelOut}
    required: [id, s]
  ModelOut: {type: object}
"#
    );
    let (root, _, diags) = run(&text);
    assert!(diags.iter().all(|d| d.severity != Severity::Error), "{diags:?}");
    let p = |k: &str| json(&root, &format!("/definitions/ModelIn/properties/{k}"));
    assert_eq!(p("id"), serde_json::json!({"type": "string", "format": "uuid"}));
    assert_eq!(p("at"), serde_json::json!({"type": "string", "format": "date-time"}));
    assert_eq!(p("f"), serde_json::json!({"type": "number", "minimum": 0.0, "maximum": 1.0}));
    assert_eq!(p("s"), serde_json::json!({"type": "string", "nullable": true, "minLength": 1}));
    assert_eq!(p("d")["additionalProperties"], true);
    assert_eq!(p("e")["additionalProperties"], serde_json::json!({"type": "integer"}));
    assert_eq!(p("l")["items"], serde_json::json!({"type": "string"}));
    assert_eq!(p("k")["type"], "string");
    assert_eq!(p("r"), serde_json::json!({"$ref": "#/definitions/ModelOut"}));
    assert_eq!(json(&root, "/definitions/ModelIn/required"), serde_json::json!(["id"]), "nullable leaves `required`");
}

#[test]
fn enum_class_without_values_is_external() {
    let text = format!(
        "{SEPT}definitions:\n  ModelIn: {{type: object, properties: {{k: {{type: enum, enum_class: EnumK, module: m}}}}}}\n"
    );
    let (root, _, _) = run(&text);
    assert_eq!(json(&root, "/definitions/ModelIn/properties/k/$ref"), "#/dependencies/external_enum_k");
}

#[test]
fn state_property_type_and_reference() {
    let text = format!(
        "{SEPT}{}",
        r#"input_state:
  object_type: object
  properties:
    m: {property_type: object, reference: ModelMsg}
    l: {property_type: array, items: {reference: ModelMsg}}
shared_models:
  ModelMsg: {module: pkg.msg, class_name: ModelMsg}
"#
    );
    let (root, _, diags) = run(&text);
    assert_eq!(json(&root, "/definitions/ModelIn/type"), "object", "input_state describes the missing input model");
    assert_eq!(json(&root, "/definitions/ModelIn/properties/m/$ref"), "#/dependencies/external_model_msg");
    assert_eq!(json(&root, "/input_state/properties/l/items/$ref"), "#/dependencies/external_model_msg");
    assert_eq!(
        diags.iter().filter(|d| d.code == Code::UnmappedExternalType).count(),
        2,
        "ModelMsg once, ModelOut once"
    );
}

#[test]
fn external_refs_stubs_and_import_records() {
    let text = format!(
        "{SEPT}{}",
        r#"dependencies:
  - {name: model_onex_event, type: model, class_name: ModelOnexEvent, module: core.event}
definitions:
  ModelIn:
    type: object
    properties:
      e: {$ref: '#/definitions/ModelOnexEvent'}
      q: {$ref: '#/definitions/ModelQ'}
  ModelOnexEvent: {type: object, description: 'ONEX event model (external dependency)'}
  ModelQ:
    $ref: 'pkg.q#/ModelQuery'
  progress_model: {name: ModelProgress, module: pkg.p}
"#
    );
    let (root, _, diags) = run(&text);
    assert_eq!(json(&root, "/definitions/ModelOnexEvent/$ref"), "#/dependencies/external_model_onex_event");
    assert_eq!(json(&root, "/definitions/ModelQ/$ref"), "#/dependencies/external_model_query");
    assert_eq!(json(&root, "/definitions/ModelProgress/$ref"), "#/dependencies/external_model_progress");
    assert!(diags.iter().any(|d| d.code == Code::Renamed && d.message.contains("progress_model")));
    let deps = json(&root, "/dependencies");
    assert_eq!(deps[1]["class_name"], "ModelOnexEvent");
    assert_eq!(deps[1]["module"], "core.event", "the stub takes its module from the matching dependency");
}

#[test]
fn unresolved_pointer_is_an_error_at_the_ref() {
    let text = format!(
        "{SEPT}definitions:\n  ModelIn: {{type: object, properties: {{x: {{$ref: '#/shared_models/Nope'}}}}}}\n"
    );
    let (root, _, diags) = run(&text);
    let d = diags.iter().find(|d| d.code == Code::UnresolvedRef).unwrap();
    assert_eq!(d.path, "definitions.ModelIn.properties.x.$ref");
    assert_eq!(d.pos.line, 9);
    assert!(json(&root, "/definitions/ModelIn/properties/x/$ref").is_null());
}

#[test]
fn tagged_union_gets_its_discriminator() {
    let text = format!(
        "{SEPT}{}",
        r#"definitions:
  ModelIn:
    oneOf: [{$ref: '#/definitions/A'}, {$ref: '#/definitions/B'}]
  A: {type: object, properties: {kind: {type: string, enum: [a], default: a}, x: {type: string}}}
  B: {type: object, properties: {kind: {type: string, enum: [b]}}}
  C: {oneOf: [{$ref: '#/definitions/A'}, {$ref: '#/definitions/A'}]}
"#
    );
    let (root, _, diags) = run(&text);
    assert_eq!(json(&root, "/definitions/ModelIn/x-tag"), "kind");
    assert!(json(&root, "/definitions/C/oneOf").is_null(), "arms that cannot be told apart");
    assert!(diags.iter().any(|d| d.code == Code::DialectApproximation && d.path == "definitions.C.oneOf"));
}

#[test]
fn io_operation_shapes() {
    let text = format!(
        "{SEPT}{}",
        r#"definitions:
  ModelIn:
    type: object
    properties: {operation_type: {type: string, enum: [produce, health_check]}}
    required: [operation_type]
io_operations:
  - {operation_type: kafka_message_produce, atomic: true, timeout_seconds: 30, buffer_size: 1}
  - {operation_name: health_check, operation_type: read}
  - {name: other_thing, input_fields: [a]}
"#
    );
    let (root, _, diags) = run(&text);
    let ops = json(&root, "/io_operations");
    assert_eq!(
        ops,
        serde_json::json!([
            {"operation_type": "produce", "atomic": true, "timeout_seconds": 30},
            {"operation_type": "health_check"}
        ])
    );
    let d = diags.iter().find(|d| d.code == Code::DialectApproximation).unwrap();
    assert!(d.message.contains("`other_thing`"), "{}", d.message);
}

#[test]
fn effect_without_usable_io_operations_gets_one_per_operation() {
    let text = format!("{SEPT}io_operations:\n  - {{operation: send, input_fields: [a]}}\n");
    let (root, _, _) = run(&text);
    assert_eq!(json(&root, "/io_operations"), serde_json::json!([{"operation_type": "process"}]));
}

#[test]
fn dependencies_are_named_and_typed() {
    let mut map = TypeMap::new();
    map.insert("ProtocolEventBus", "dyn onex_runtime::event_bus::EventPublisher").unwrap();
    let text = format!(
        "{SEPT}{}",
        r#"dependencies:
  - {name: EventBus, type: protocol, class_name: ProtocolEventBus}
  - {name: event_bus, interface: X}
  - {name: c, type: ModelONEXContainer}
"#
    );
    let (root, _, diags) = run_with(&text, map);
    let deps = json(&root, "/dependencies");
    assert_eq!(deps[0]["name"], "event_bus");
    assert_eq!(deps[0]["rust_type"], "dyn onex_runtime::event_bus::EventPublisher");
    assert_eq!(deps[1]["name"], "event_bus_2");
    assert_eq!(deps[1]["type"], "protocol");
    assert_eq!(deps[2]["type"], "ModelONEXContainer");
    assert_eq!(diags.iter().filter(|d| d.code == Code::Renamed).count(), 3, "node name + two dependencies");
}

#[test]
fn missing_models_are_any_json_with_a_warning() {
    let (root, _, diags) = run("contract_version: {major: 1, minor: 1, patch: 0}\nnode_type: EFFECT_GENERIC\n");
    assert_eq!(json(&root, "/node_name"), "node_c_effect", "named after the folder");
    assert_eq!(json(&root, "/input_model"), "NodeCEffectInput");
    assert_eq!(json(&root, "/definitions/NodeCEffectInput"), serde_json::json!({}));
    assert_eq!(diags.iter().filter(|d| d.code == Code::DialectApproximation).count(), 2);
}

#[test]
fn semver() {
    assert_eq!(parse_semver("1.2.3"), Some((1, 2, 3)));
    assert_eq!(parse_semver("v0.1.0"), Some((0, 1, 0)));
    assert_eq!(parse_semver("1.2"), None);
    assert_eq!(parse_semver("1.2.3.4"), None);
    assert_eq!(parse_semver("1.-2.3"), None);
}

#[test]
fn non_node_files_are_skipped_with_a_note() {
    let source = SourceFile::in_memory("t/OMN-1.yaml", "ticket_id: OMN-1\n");
    let mut diags = Vec::new();
    let root = crate::read::parse("t/OMN-1.yaml", &source.text, &mut diags).unwrap();
    let outcome = normalize(&source, root, &Options::default(), &mut diags);
    assert!(matches!(outcome, Outcome::Skipped(Family::Ticket)));
    assert_eq!(diags[0].severity, Severity::Note);
    assert_eq!(diags[0].code, Code::NotANodeContract);
}
