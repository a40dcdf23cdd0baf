//! What build.rs generated: byte-for-byte the checked-in `generated/src`, and nodes that work.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use onex_build_user::new_node::nodes::node_sample_widget_effect::v1_0_0 as widget;
use onex_runtime::{Container, Context, ErrorCode, Node, OnexError};

fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn build_rs_output_equals_checked_in_generated_tree() {
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generated/src");
    let out = PathBuf::from(onex_build_user::OUT_DIR).join("main");
    let expected: Vec<String> = files_under(&checked_in).into_iter().filter(|f| !f.ends_with("/node.rs")).collect();
    let actual: Vec<String> = files_under(&out)
        .into_iter()
        .filter(|f| !f.ends_with("/node.rs") && f != "onex_nodes.rs" && f != ".codegen-stamp")
        .collect();
    assert_eq!(expected, actual, "same generated files");
    assert!(expected.len() >= 9 * 5 + 3);
    for file in &expected {
        let a = std::fs::read(checked_in.join(file)).unwrap();
        let b = std::fs::read(out.join(file)).unwrap();
        assert!(a == b, "{file} differs between generated/src and build.rs output");
    }
}

#[test]
fn registries_list_every_node_by_name_and_version() {
    let names: Vec<String> = onex_build_user::main_nodes::registry()
        .entries()
        .iter()
        .map(|e| format!("{}@{}", e.contract.name, e.contract.version))
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains(&"node_postgres_connection_manager_effect@1.0.0".to_owned()));
    let contract = &onex_build_user::main_nodes::nodes::node_postgres_connection_manager_effect::v1_0_0::CONTRACT;
    assert_eq!(contract.kind, onex_runtime::NodeKind::Effect);
    assert!(contract.operation("clear_metrics").is_some());
    assert!(!contract.io_operations.is_empty());
}

fn input(operation: widget::models::ModelSampleWidgetOperationType) -> widget::models::ModelSampleWidgetInput {
    widget::models::ModelSampleWidgetInput {
        payload: Some(serde_json::json!({"k": 1})),
        ..widget::models::ModelSampleWidgetInput::new(operation, uuid::Uuid::new_v4())
    }
}

#[tokio::test]
async fn the_new_node_builds_from_the_registry_and_its_scaffold_answers_not_implemented() {
    let registry = onex_build_user::new_node::registry();
    let node = registry.build("node_sample_widget_effect", None, &Container::new()).unwrap();
    let err = node
        .process_json(
            serde_json::json!({"operation_type": "process", "correlation_id": uuid::Uuid::new_v4()}),
            Context::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotImplemented);
    assert_eq!(err.message(), "node_sample_widget_effect.process is not implemented yet");
}

#[tokio::test]
async fn every_operation_of_a_node_with_more_than_sixteen_reaches_its_own_method() {
    let registry = onex_build_user::many_operations::registry();
    let node = registry.build("node_many_operations_compute", None, &Container::new()).unwrap();
    let operations = node.contract().operations;
    assert_eq!(operations.len(), 18, "the fixture must outgrow one OneOf16");
    for operation in operations {
        let err =
            node.process_json(serde_json::json!({"operation_type": operation.name}), Context::new()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotImplemented);
        assert_eq!(err.message(), format!("node_many_operations_compute.{} is not implemented yet", operation.name));
    }
}

/// A handler that counts calls and sleeps in `health_check`.
struct Counting {
    processed: AtomicUsize,
}

impl widget::SampleWidgetHandler for Counting {
    fn new(_: &Container) -> Result<Self, OnexError> {
        Ok(Self { processed: AtomicUsize::new(0) })
    }

    async fn process(&self, input: widget::handler::Input, _: &Context) -> Result<widget::handler::Output, OnexError> {
        self.processed.fetch_add(1, Ordering::SeqCst);
        Ok(widget::models::ModelSampleWidgetOutput {
            success: true,
            correlation_id: input.correlation_id,
            result: input.payload,
            error: None,
        })
    }

    async fn health_check(&self, _: widget::handler::Input, _: &Context) -> Result<widget::handler::Output, OnexError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Err(OnexError::new(ErrorCode::InternalError, "unreachable: the timeout fires first"))
    }
}

#[tokio::test]
async fn the_node_dispatches_on_operation_type_and_applies_the_timeout() {
    use widget::models::ModelSampleWidgetOperationType as Op;
    let node = widget::NodeSampleWidgetEffect::with_handler(Counting { processed: AtomicUsize::new(0) });
    let request = input(Op::Process);
    let out = node.process(request.clone(), Context::new()).await.unwrap();
    assert_eq!(out.correlation_id, request.correlation_id);
    assert_eq!(out.result, request.payload);
    assert_eq!(node.handler().processed.load(Ordering::SeqCst), 1);

    // health_check's contract timeout is 5 s; the request deadline (20 ms) is tighter.
    let ctx = Context::new().with_timeout(Duration::from_millis(20));
    let err = node.process(input(Op::HealthCheck), ctx).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationTimeout);
    assert!(err.message().starts_with("node_sample_widget_effect.health_check did not finish within"), "{err}");
    assert_eq!(err.details()["operation"], "health_check");
    assert_eq!(node.handler().processed.load(Ordering::SeqCst), 1);
    assert_eq!(widget::CONTRACT.operation("health_check").unwrap().timeout, Duration::from_secs(5));
}

#[test]
fn a_missing_required_dependency_names_it() {
    use onex_build_user::main_nodes::nodes::node_postgres_connection_manager_effect::v1_0_0 as pg;
    let err = pg::Dependencies::resolve(&Container::new()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RegistryResolutionFailed);
    assert!(err.message().contains("dependency `"), "{err}");
    assert!(err.message().contains("node_postgres_connection_manager_effect"), "{err}");
}

#[test]
fn keyword_properties_keep_their_wire_names() {
    use onex_build_user::keywords::nodes::node_keyword_fields_compute::v1_0_0::models::ModelKeywordInput;
    let json =
        serde_json::json!({"type": "t", "match": "Self", "self": 3, "async": true, "gen": ["a"], "camelCase": 1.5});
    let input: ModelKeywordInput = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(input.r#type, "t");
    assert_eq!(input.self_, Some(3));
    assert_eq!(serde_json::to_value(&input).unwrap(), json);
    let defaulted: ModelKeywordInput =
        serde_json::from_value(serde_json::json!({"type": "t", "match": "exact"})).unwrap();
    assert!(!defaulted.r#async);
}

#[test]
fn a_sensitive_value_never_shows_in_debug() {
    use onex_build_user::keywords::nodes::node_keyword_fields_compute::v1_0_0::models::ModelKeywordOutput;
    let tree = serde_json::json!({"value": 1, "left": {"value": 2, "children": [{"value": 3}]}});
    let json = serde_json::json!({"password": "hunter2", "crate": "c", "yield": {"a": 1}, "tree": tree});
    let output: ModelKeywordOutput = serde_json::from_value(json.clone()).unwrap();
    let shown = format!("{output:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(output.password.as_ref().map(|p| p.expose().as_str()), Some("hunter2"));
    assert_eq!(serde_json::to_value(&output).unwrap(), json, "round-trips unchanged");
}

#[test]
fn an_x_boxed_property_is_a_box_with_the_same_json() {
    use onex_build_user::keywords::nodes::node_keyword_fields_compute::v1_0_0::models::{
        ModelKeywordOutput, ModelKeywordTree,
    };
    let json = serde_json::json!({"box": {"value": 7, "left": {"value": 8}}});
    let output: ModelKeywordOutput = serde_json::from_value(json.clone()).unwrap();
    // The field's type is `Option<Box<ModelKeywordTree>>`: this only compiles when it is boxed.
    let boxed: &Option<Box<ModelKeywordTree>> = &output.r#box;
    assert_eq!(boxed.as_ref().map(|tree| tree.value), Some(7));
    assert_eq!(serde_json::to_value(&output).unwrap(), json, "round-trips unchanged");
}

#[test]
fn constructors_take_the_required_fields_and_fill_the_rest() {
    use onex_build_user::keywords::nodes::node_keyword_fields_compute::v1_0_0::models::{
        ModelKeywordInput, ModelKeywordInputMatch, ModelKeywordOutput, ModelKeywordWide,
    };
    let input = ModelKeywordInput::new("t".into(), ModelKeywordInputMatch::Exact);
    assert_eq!(
        serde_json::to_value(&input).unwrap(),
        serde_json::json!({"type": "t", "match": "exact", "async": false}),
        "optional fields absent, `async` at its default"
    );
    // No required field: `new()` and `Default` agree.
    assert_eq!(ModelKeywordOutput::new(), ModelKeywordOutput::default());
    assert_eq!(serde_json::to_value(ModelKeywordOutput::default()).unwrap(), serde_json::json!({}));
    let wide = ModelKeywordWide::new(1, 2, 3, 4, 5, 6, 7, 8);
    // `mut` is `x-boxed`: the constructor takes the value and boxes it.
    assert_eq!((wide.r#loop, *wide.r#mut), (1, 8));
}
