//! Nodes routed by `handler_routing`, generated and called: one fixture contract per routing
//! strategy (`tests/fixtures/routing/contracts`), its generated package checked in under
//! `tests/fixtures/routing/generated` (compared with a fresh generation here; `UPDATE_GOLDENS=1`
//! rewrites it) and compiled into this test, whose handlers record which method a request
//! reached.

use std::path::{Path, PathBuf};

use onex_runtime::node::routing::RoutingStrategy;
use onex_runtime::{Container, Context, ErrorCode, Node, NodeTopics, OnexError};
use serde_json::{Value, json};

#[allow(dead_code, unused_imports, unreachable_pub)]
#[path = "../fixtures/routing/generated/src/lib.rs"]
mod routed;

use routed::nodes::node_op_route_effect::v1_0_0 as op_route;
use routed::nodes::node_topic_route_orchestrator::v1_0_0 as topic_route;
use routed::nodes::node_type_route_compute::v1_0_0 as type_route;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/routing")
}

#[test]
fn the_checked_in_package_is_what_the_generator_writes() {
    let options = codegen::dialect::Options::default();
    let (loaded, output) = codegen::generate_with(&fixture().join("contracts"), &options);
    let output = output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()));
    let unexpected: Vec<_> = loaded.diagnostics.iter().filter(|d| d.code.as_str() != "CG0023").collect();
    assert!(unexpected.is_empty(), "only the unmapped fixture models may be reported: {unexpected:?}");
    let src = fixture().join("generated/src");
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    for (path, text) in output.generated.iter().chain(&output.scaffolds) {
        let file = src.join(path);
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, text).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(&checked_in, text, "{path} is stale: run with UPDATE_GOLDENS=1");
    }
}

/// Answers with the name of the method that ran.
struct Recorder;

fn reached(method: &str, input: Value) -> Result<Value, OnexError> {
    Ok(json!({"method": method, "input": input}))
}

impl op_route::OpRouteHandler for Recorder {
    fn new(_: &Container) -> Result<Self, OnexError> {
        Ok(Self)
    }
    async fn send_alert(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("send_alert", input)
    }
    async fn send_message(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("send_message", input)
    }
}

impl type_route::TypeRouteHandler for Recorder {
    fn new(_: &Container) -> Result<Self, OnexError> {
        Ok(Self)
    }
    async fn postgres_upsert_contract(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("postgres_upsert_contract", input)
    }
    async fn heartbeat(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("heartbeat", input)
    }
    async fn fallback(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("fallback", input)
    }
}

impl topic_route::TopicRouteHandler for Recorder {
    fn new(_: &Container) -> Result<Self, OnexError> {
        Ok(Self)
    }
    async fn cmd_platform_register_node_v1(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("cmd_platform_register_node_v1", input)
    }
    async fn evt_platform_node_registered_v1(&self, input: Value, _: &Context) -> Result<Value, OnexError> {
        reached("evt_platform_node_registered_v1", input)
    }
}

async fn method_of<N: Node<Input = Value, Output = Value>>(
    node: &N,
    input: Value,
    ctx: Context,
) -> Result<String, OnexError> {
    let out = node.process(input, ctx).await?;
    Ok(out["method"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn operation_match_dispatches_by_the_operation_and_rejects_the_rest() {
    let node = op_route::NodeOpRouteEffect::with_handler(Recorder);
    let ctx = Context::new;
    assert_eq!(method_of(&node, json!({"operation": "send.alert"}), ctx()).await.unwrap(), "send_alert");
    assert_eq!(method_of(&node, json!({"operation": "send.message"}), ctx()).await.unwrap(), "send_message");

    let err = method_of(&node, json!({"operation": "send.fax"}), ctx()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(
        err.message(),
        "node_op_route_effect has no handler for operation `send.fax`; expected one of: send.alert, send.message"
    );
    assert_eq!(err.details()["expected"], json!(["send.alert", "send.message"]));
    let err = method_of(&node, json!({"text": "hi"}), ctx()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);

    // The io_operations settings travel with the route and its operation.
    let routing = &op_route::handler::ROUTING;
    assert_eq!(routing.strategy, RoutingStrategy::OperationMatch);
    let alert = &routing.routes[0];
    assert_eq!((alert.operation, alert.idempotent), ("send.alert", Some(true)));
    assert_eq!((alert.input_fields, alert.output_fields), (&["severity", "text"][..], &["delivered"][..]));
    assert_eq!(routing.routes[1].input_fields, ["text"]);
    let spec = op_route::CONTRACT.operation("send.alert").unwrap();
    assert_eq!(spec.description, "Sends an alert, at most once per key.");
}

#[tokio::test]
async fn payload_type_match_dispatches_by_the_type_tag_and_falls_back() {
    let node = type_route::NodeTypeRouteCompute::with_handler(Recorder);
    let ctx = Context::new;
    let intent = json!({"payload": {"intent_type": "postgres.upsert_contract"}});
    assert_eq!(method_of(&node, intent, ctx()).await.unwrap(), "postgres_upsert_contract");
    let event = json!({"event_type": "platform.node-heartbeat", "payload": {}});
    assert_eq!(method_of(&node, event, ctx()).await.unwrap(), "heartbeat");
    let by_model = json!({"payload_type": "ModelHeartbeat"});
    assert_eq!(method_of(&node, by_model, ctx()).await.unwrap(), "heartbeat");
    // default_handler names a class of no route: its own method takes everything else.
    assert_eq!(method_of(&node, json!({"event_type": "other"}), ctx()).await.unwrap(), "fallback");
    assert_eq!(method_of(&node, json!({}), ctx()).await.unwrap(), "fallback");
}

#[tokio::test]
async fn topic_match_dispatches_by_the_topic_and_falls_back_to_the_named_route() {
    let node = topic_route::NodeTopicRouteOrchestrator::with_handler(Recorder);
    let on = |topic: &str| Context::new().with_topic(topic);
    assert_eq!(
        method_of(&node, json!({}), on(topic_route::topics::CMD_PLATFORM_REGISTER_NODE_V1)).await.unwrap(),
        "cmd_platform_register_node_v1"
    );
    assert_eq!(
        method_of(&node, json!({}), on("onex.evt.platform.node-registered.v1")).await.unwrap(),
        "evt_platform_node_registered_v1"
    );
    // default_handler: HandlerStart, the handler of the first route.
    assert_eq!(method_of(&node, json!({}), on("onex.evt.other.x.v1")).await.unwrap(), "cmd_platform_register_node_v1");
    assert_eq!(method_of(&node, json!({}), Context::new()).await.unwrap(), "cmd_platform_register_node_v1");
}

#[test]
fn event_bus_topics_are_typed_once() {
    use topic_route::topics;
    assert_eq!(topics::SUBSCRIBE, ["onex.cmd.platform.register-node.v1", "onex.evt.platform.node-registered.v1"]);
    assert_eq!(topics::PUBLISH, [topics::EVT_PLATFORM_NODE_REGISTERED_V1, topics::RUNTIME_SUBSCRIPTIONS]);
    assert_eq!(topics::DLQ, ["onex.dlq.commands.v1"]);
    assert_eq!(topics::CONSUMER_GROUP, Some("onex-topic-route"));
}

#[test]
fn the_contract_carries_its_event_bus_topics_and_none_without_the_section() {
    let expected = NodeTopics {
        subscribe: &["onex.cmd.platform.register-node.v1", "onex.evt.platform.node-registered.v1"],
        publish: &["onex.evt.platform.node-registered.v1", "onex.runtime.subscriptions"],
        dlq: &["onex.dlq.commands.v1"],
        consumer_group: Some("onex-topic-route"),
    };
    assert_eq!(topic_route::CONTRACT.topics, Some(expected));
    assert_eq!(op_route::CONTRACT.topics, None);
    assert_eq!(type_route::CONTRACT.topics, None);
    // A host serving the registry finds them from the node's name alone.
    let registry = routed::registry();
    let topics_of = |name: &str| registry.find(name, None).unwrap().contract.topics;
    assert_eq!(topics_of("node_topic_route_orchestrator"), Some(expected));
    assert_eq!(topics_of("node_op_route_effect"), None);
}
