//! Which kind of file a YAML document is, decided by its keys (never by its path): the corpus
//! keeps node contracts, subcontracts, ticket files and configuration side by side.

use crate::read::Node;

use super::tree::{has, str_of};

/// The families of contract-like files found in ONEX repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A node contract: top-level `node_type`.
    NodeContract,
    /// A subcontract (`subcontract_name`/`subcontract_version`, or `contract_type: *_subcontract`).
    Subcontract,
    /// A ticket / definition-of-done contract (`ticket_id`, `dod_evidence`).
    Ticket,
    /// A handler contract (`handler_id`, `descriptor`).
    Handler,
    /// A projector contract (`projector_kind`).
    Projector,
    /// An event schema (`topic` and `producer`).
    EventSchema,
    /// A validation contract (`contract_kind`).
    Validation,
    /// A service or runtime configuration (`feature_flags`, `services`, `runtime`, …).
    ServiceConfig,
    /// Anything else.
    Other,
}

impl Family {
    /// How the family is named in notes.
    pub fn describe(self) -> &'static str {
        match self {
            Family::NodeContract => "a node contract",
            Family::Subcontract => "a subcontract",
            Family::Ticket => "a ticket (definition-of-done) contract",
            Family::Handler => "a handler contract",
            Family::Projector => "a projector contract",
            Family::EventSchema => "an event schema",
            Family::Validation => "a validation contract",
            Family::ServiceConfig => "a service or runtime configuration",
            Family::Other => "not a contract the generator knows",
        }
    }

    /// The keys that identify the family (for the note that says why a file was skipped).
    pub fn evidence(self) -> &'static str {
        match self {
            Family::NodeContract => "`node_type`",
            Family::Subcontract => "`subcontract_name`, `subcontract_version` or `contract_type: *_subcontract`",
            Family::Ticket => "`ticket_id` / `dod_evidence`",
            Family::Handler => "`handler_id` / `descriptor`",
            Family::Projector => "`projector_kind`",
            Family::EventSchema => "`topic` and `producer`",
            Family::Validation => "`contract_kind`",
            Family::ServiceConfig => "`feature_flags`, `services`, `runtime`, `endpoints` or `integrations`",
            Family::Other => "no `node_type`",
        }
    }
}

/// The family of a parsed document.
pub fn detect(root: &Node) -> Family {
    if root.as_map().is_none() {
        return Family::Other;
    }
    if has(root, "node_type") {
        return Family::NodeContract;
    }
    let subcontract_type = str_of(root, "contract_type").is_some_and(|t| t.ends_with("_subcontract"));
    if has(root, "subcontract_name") || has(root, "subcontract_version") || subcontract_type {
        return Family::Subcontract;
    }
    if has(root, "ticket_id") || has(root, "dod_evidence") {
        return Family::Ticket;
    }
    if has(root, "handler_id") || has(root, "descriptor") {
        return Family::Handler;
    }
    if has(root, "projector_kind") {
        return Family::Projector;
    }
    if has(root, "topic") && has(root, "producer") {
        return Family::EventSchema;
    }
    if has(root, "contract_kind") {
        return Family::Validation;
    }
    let config_keys = ["feature_flags", "services", "runtime", "endpoints", "integrations", "llm_endpoints"];
    if config_keys.iter().any(|k| has(root, k)) {
        return Family::ServiceConfig;
    }
    Family::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family_of(text: &str) -> Family {
        let mut diags = Vec::new();
        detect(&crate::read::parse("t.yaml", text, &mut diags).unwrap())
    }

    #[test]
    fn families_by_keys() {
        assert_eq!(family_of("node_type: EFFECT\n"), Family::NodeContract);
        assert_eq!(family_of("contract_type: x_subcontract\n"), Family::Subcontract);
        assert_eq!(family_of("subcontract_name: x\n"), Family::Subcontract);
        assert_eq!(family_of("ticket_id: OMN-1\n"), Family::Ticket);
        assert_eq!(family_of("handler_id: a.b\ndescriptor: {}\n"), Family::Handler);
        assert_eq!(family_of("topic: t\nproducer: p\n"), Family::EventSchema);
        assert_eq!(family_of("projector_kind: x\n"), Family::Projector);
        assert_eq!(family_of("contract_kind: x\n"), Family::Validation);
        assert_eq!(family_of("name: x\nfeature_flags: []\n"), Family::ServiceConfig);
        assert_eq!(family_of("- 1\n"), Family::Other);
        assert_eq!(family_of("name: x\n"), Family::Other);
    }
}
