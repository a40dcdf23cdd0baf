//! For every node, an example input and output (tests/fixtures/roundtrip/<node>/) round-trips
//! through the generated models unchanged: JSON → model → JSON gives the same value.

use std::path::Path;

use onex_generated::nodes;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn fixture(node: &str, which: &str) -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/roundtrip").join(node).join(format!("{which}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn round_trip<T: DeserializeOwned + Serialize>(node: &str, which: &str) {
    let json = fixture(node, which);
    let model: T = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{node}/{which}.json: {e}"));
    let back = serde_json::to_value(&model).unwrap();
    assert_eq!(back, json, "{node}/{which}.json changed in a round trip");
}

macro_rules! round_trips {
    ($($node:ident),* $(,)?) => {
        const NODES: &[&str] = &[$(stringify!($node)),*];

        #[test]
        fn every_node_round_trips_its_example_input_and_output() {
            $(
                round_trip::<nodes::$node::v1_0_0::handler::Input>(stringify!($node), "input");
                round_trip::<nodes::$node::v1_0_0::handler::Output>(stringify!($node), "output");
            )*
        }
    };
}

round_trips!(
    node_consul_effect,
    node_consul_projector_effect,
    node_distributed_tracing_compute,
    node_event_bus_circuit_breaker_compute,
    node_infrastructure_health_monitor_orchestrator,
    node_infrastructure_observability_compute,
    node_kafka_producer_pool_effect,
    node_postgres_adapter_effect,
    node_postgres_connection_manager_effect,
);

#[test]
fn every_registered_node_has_fixtures() {
    let registered: Vec<&str> = onex_generated::registry().entries().iter().map(|e| e.contract.name).collect();
    assert_eq!(registered, NODES, "add the new node to round_trips! and tests/fixtures/roundtrip/");
}

#[test]
fn a_model_missing_a_required_field_is_rejected() {
    let mut json = fixture("node_postgres_connection_manager_effect", "input");
    json.as_object_mut().unwrap().remove("operation_type");
    let result: Result<nodes::node_postgres_connection_manager_effect::v1_0_0::handler::Input, _> =
        serde_json::from_value(json);
    assert!(result.unwrap_err().to_string().contains("operation_type"));
}
