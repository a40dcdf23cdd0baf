//! The tagged union the generator makes from hook_node's `oneOf` (nasty case N10, corpus file
//! `sept2025/.../hook_node/v1_0_0/contract.yaml`) round-trips through serde: each arm is read
//! by its `webhook_type` and written back unchanged, and an unknown tag is an error. The models
//! are the checked-in golden output (`codegen/tests/dialect_goldens.rs` keeps them current).

#[allow(dead_code)]
mod hook {
    include!("../fixtures/dialects/n06_grouped_definitions/models.rs.in");
}

use hook::ModelWebhookPayloadUnion as Payload;

const ARMS: [&str; 4] = [
    r##"{"webhook_type":"slack","text":"deploy done","channel":"#ops"}"##,
    r#"{"webhook_type":"discord","content":"deploy done","username":"bot"}"#,
    r##"{"webhook_type":"teams","summary":"deploy","text":"deploy done","theme_color":"#00FF00"}"##,
    r#"{"webhook_type":"infrastructure_alert","alert_level":"critical","service_name":"db","alert_message":"down"}"#,
];

#[test]
fn every_arm_round_trips_unchanged() {
    for json in ARMS {
        let payload: Payload = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let written = serde_json::to_value(&payload).unwrap();
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(json).unwrap(), "{json}");
    }
}

#[test]
fn the_tag_selects_the_arm() {
    let payload: Payload = serde_json::from_str(ARMS[1]).unwrap();
    match payload {
        Payload::Discord(discord) => assert_eq!(discord.content, "deploy done"),
        other => panic!("read as {other:?}"),
    }
    let alert: Payload = serde_json::from_str(ARMS[3]).unwrap();
    assert!(
        matches!(alert, Payload::InfrastructureAlert(ref a) if a.alert_level == hook::ModelInfrastructureAlertPayloadAlertLevel::Critical)
    );
}

#[test]
fn unknown_or_missing_tags_and_missing_fields_are_errors() {
    assert!(serde_json::from_str::<Payload>(r#"{"webhook_type":"irc","text":"x"}"#).is_err());
    assert!(serde_json::from_str::<Payload>(r#"{"text":"x"}"#).is_err());
    assert!(serde_json::from_str::<Payload>(r#"{"webhook_type":"teams","text":"no summary"}"#).is_err());
}
