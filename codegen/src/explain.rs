//! `codegen explain CODE`: the long explanation of each diagnostic code, with an example of
//! the problem and of the fix. The one-line summaries live with the codes in
//! [`crate::diagnostics::Code::summary`]; this is the text behind them.

use crate::diagnostics::Code;

/// The code named `text` (`CG0004`, `cg4`, `4`), if there is one.
pub fn parse_code(text: &str) -> Option<Code> {
    let digits = text.trim().trim_start_matches(['C', 'c']).trim_start_matches(['G', 'g']);
    let number: u32 = digits.parse().ok()?;
    Code::ALL.into_iter().find(|c| c.number() == number)
}

/// The long explanation of `code`: a title line, what it means, an example and the fix.
pub fn explain(code: Code) -> String {
    let body = match code {
        Code::YamlSyntax => {
            "The file cannot be read as YAML, so nothing else in it is checked. The position is where the parser \
             gave up, which is usually at or just after the mistake: a missing `:` after a key, an unclosed \
             `[` or `{`, a quote that does not end, or indentation that does not line up with its siblings. A \
             contract file holds exactly one YAML document whose root is a mapping; aliases (`*x`) are not \
             supported.\n\nExample:\n    definitions:\n      ModelX: {type: object\n\nFix: close the flow mapping: \
             `ModelX: {type: object}`."
        }
        Code::YamlLimit => {
            "The file is larger than the size limit (4 MiB) or nests deeper than the depth limit (64 levels). \
             Real contracts are a few kilobytes and nest about eight levels; these limits keep the generator \
             from running out of memory or stack on hostile input.\n\nFix: split the contract, or move deeply \
             nested inline objects into their own `definitions` entries and refer to them with `$ref`."
        }
        Code::DuplicateKey => {
            "A mapping has the same key twice. YAML leaves this undefined; the Python tooling (PyYAML) keeps the \
             last value, and so does the generator, so the contract means what it meant before. The warning \
             names both places because the first value is silently lost.\n\nExample (consul, September 2025):\n    \
             health_check:\n      required: false\n      properties: {…}\n      required: [url, interval, timeout]\n\n\
             Fix: delete the entry you do not mean; for the example above, keep the list and drop `required: false`."
        }
        Code::MissingKey => {
            "A key the generator needs is absent: at the top level `contract_version`, `node_name`, `node_type`, \
             `description`, `input_model`, `output_model` and `definitions`; `name` and `type` on each dependency; \
             `operation_type` on each io_operations entry; `items` on an array schema. The position is the \
             mapping that should hold the key.\n\nFix: add the key; the hint shows an example value."
        }
        Code::WrongType => {
            "A value has the wrong YAML type, e.g. a list where a mapping is expected, a string where a number of \
             seconds is expected, or a version that is neither `1.0.0` nor `{major, minor, patch}`. Quoted \
             scalars are strings: `'true'` is not a boolean and `\"30\"` is not a number.\n\nFix: write the value \
             in the form the message asks for."
        }
        Code::UnknownNodeType => {
            "`node_type` must be one of EFFECT, COMPUTE, REDUCER or ORCHESTRATOR. Contracts in our dialect write \
             it in upper case; contracts of the older dialects may use any case and the `_GENERIC` suffix \
             (`EFFECT_GENERIC`), which the generator reads as the base kind. Other 2026 node types \
             (RUNTIME_HOST_GENERIC, GATEWAY, …) have no Rust node kind.\n\nFix: use one of the four kinds."
        }
        Code::NamingConvention => {
            "A name breaks the convention of our dialect: node names are `node_<name>_<kind>` in lower snake case, \
             type names (definition keys) are PascalCase, dependency names are lower snake case. Contracts of the \
             older dialects are not held to this: their names are converted (see CG0024).\n\nFix: rename as the \
             hint suggests, and rename the folder and every `$ref` to match."
        }
        Code::FolderVersionMismatch => {
            "In our contracts folder each contract lives in `nodes/<node_name>/v<major>_<minor>_<patch>/`, and the \
             version folder must equal `contract_version`, so a version bump cannot silently overwrite the \
             previous version's generated code. (Contracts in other dialects keep their own layout and are not \
             checked.)\n\nFix: move the file to the folder the hint names, or correct `contract_version`."
        }
        Code::FolderNameMismatch => {
            "In our contracts folder the node folder must equal `node_name`: the generated module path comes from \
             `node_name`, and a mismatch makes the checked-in tree disagree with the contracts tree.\n\nFix: rename \
             the folder or the node."
        }
        Code::KindMismatch => {
            "The kind suffix of `node_name` (`_effect`, `_compute`, `_reducer`, `_orchestrator`) disagrees with \
             `node_type`. The generated node implements the runtime trait of `node_type`, so the name would lie \
             about what the node may do (only EFFECT nodes do I/O).\n\nFix: make them agree."
        }
        Code::UnresolvedRef => {
            "A reference points to nothing: a `$ref` whose JSON pointer (resolved from the document root, e.g. \
             `#/definitions/ModelX`, `#/definitions/models/ModelX`, `#/shared_models/ModelX`) finds no value; an \
             `input_model`/`output_model` that is not a definition; a `required` entry that is not a property; a \
             `#/dependencies/<name>` whose dependency has no `rust_type`.\n\nFix: define the target, or point at \
             one that exists; the hint lists the candidates."
        }
        Code::NameCollision => {
            "Two items would get the same Rust name: two definitions (also across grouped `models:`/`enums:`), an \
             inline type named `<Parent><Property>` that equals an existing definition, two properties whose \
             snake_case field names are equal (`userId` and `user_id`), two enum values whose variants are equal \
             (`read-only` and `read_only`), or a type named like a prelude item (`Result`, `Option`, `String`, \
             `Box`, `Vec`). Both locations are reported.\n\nFix: rename one of them."
        }
        Code::MissingIoOperations => {
            "An EFFECT contract in our dialect must list its io_operations: EFFECT nodes are the only ones allowed \
             to do I/O, and each operation's timeout and atomicity come from its entry. (For the older dialects \
             the generator adds one entry per operation with the default timeout.)\n\nFix:\n    io_operations:\n      \
             - {operation_type: execute_query, atomic: true, timeout_seconds: 30}"
        }
        Code::UnsupportedSchema => {
            "A schema uses something the generator cannot turn into a Rust type: an unknown `type`, `x-sensitive` \
             on something other than a plain string, `type: enum` without values or `enum_class`.\n\nFix: use \
             string, integer, number, boolean, array or object (omit `type` for any JSON value)."
        }
        Code::UnknownOperation => {
            "An io_operations entry configures an operation the node does not have. A node's operations are the \
             values of its input model's `operation_type` enum (or the single operation `process`).\n\nFix: use \
             one of the listed operations, or add the value to the enum."
        }
        Code::DuplicateName => {
            "A name is declared twice in a list where it must be unique: a dependency, an io_operations entry, \
             an enum value, or a node version defined by two contracts.\n\nFix: remove or rename the repeat."
        }
        Code::Io => {
            "A file or folder cannot be read or written: it is missing, not UTF-8, or not accessible. For a \
             subcontract listed under `subcontracts[].path` this is a warning: the path is relative to the \
             contract's folder.\n\nFix: check the path and permissions."
        }
        Code::InvalidOperationType => {
            "The node dispatches on its input's `operation_type`, so that property must be a required string enum \
             (inline or through `$ref`); its values become the handler's methods.\n\nFix:\n    operation_type: \
             {type: string, enum: [op_a, op_b]}\n  and list `operation_type` under `required`."
        }
        Code::InvalidRustType => {
            "A `rust_type` (or a type-map entry) does not parse as a Rust type.\n\nFix: write a path such as \
             `onex_runtime::postgres::PostgresConnectionManager`, `dyn onex_runtime::event_bus::EventPublisher` or \
             `serde_json::Value`."
        }
        Code::InvalidDefault => {
            "A `default` does not fit the property's type, e.g. a string default on an integer, or a value that is \
             not one of the enum's values. Defaults become Rust code, so they must type-check.\n\nFix: write a \
             default of the property's type, or remove it."
        }
        Code::NoContracts => {
            "No contract file was found where the generator looked.\n\nFix: point `--contracts` at a folder that \
             holds `contract.yaml` files, or create one with `cargo run -p codegen -- new node_<name>_<kind>`."
        }
        Code::NotANodeContract => {
            "A note, not a problem: the file is not a node contract, so it generates no code. The family is \
             decided by the keys, not the path: node contracts have a top-level `node_type`; subcontracts have \
             `subcontract_name`/`subcontract_version` or `contract_type: *_subcontract` (they are read through \
             their contract's `subcontracts[].path`); ticket files have `ticket_id`/`dod_evidence`; handler \
             contracts `handler_id`/`descriptor`; projectors `projector_kind`; event schemas `topic` and \
             `producer`; validation contracts `contract_kind`; service and runtime configuration files \
             `feature_flags`, `services`, …"
        }
        Code::UnmappedExternalType => {
            "The contract uses a type defined outside it: a Python class named by `input_model: {name, module}`, \
             `$ref: '#/shared_models/X'`, `$ref: 'python.module#/Class'`, `reference: X`, `type: ref`, an \
             `enum_class`, or an external stub (`ModelX: {type: object, description: '… (external dependency)'}` \
             matching a dependency's class). Without a mapping the generator uses `serde_json::Value`, which \
             accepts any JSON, so the code compiles but the type is not checked.\n\nFix: map it to a Rust type on \
             the command line, `--map-type ModelOnexEvent=onex_runtime::event::OnexEvent`, or in a type map file \
             given with `--type-map FILE`:\n    types:\n      ModelOnexEvent: onex_runtime::event::OnexEvent\n\
             A qualified name (`omnibase_core.model.ModelOnexEvent`) wins over the bare class name."
        }
        Code::Renamed => {
            "A name from a contract of another dialect is not valid or idiomatic Rust, so it was converted \
             predictably: node names become `node_<name>_<kind>` in lower snake case (`consul_adapter` with \
             node_type EFFECT → `node_consul_adapter_effect`), definition names become PascalCase \
             (`progress_model` → `ProgressModel`; an import record takes its class name), dependency names \
             become lower snake case, and repeats get `_2`, `_3`, … in file order. When two contracts give the \
             same node name and version, the later one (in path order) is renamed the same way. Wire names \
             (JSON keys and enum strings) never change.\n\nFix (optional): use the converted name in the contract."
        }
        Code::DialectApproximation => {
            "A construct of another dialect was read as closely as Rust allows, or could not be used: \
             io_operations entries that name no operation of the node (their timeout and atomicity are not \
             applied), a `oneOf` without a shared single-value enum discriminator (read as any JSON value), a \
             missing `input_model`/`output_model` (any JSON value), a subcontract path that is not a \
             subcontract.\n\nFix: follow the hint, or accept the approximation."
        }
        Code::StateMachineUnknownState => {
            "A `state_machine` refers to a state it does not declare under `states`: the `from_state` or \
             `to_state` of a transition, or an entry of `terminal_states`. The generated `State` enum has one \
             variant per declared state, so a transition to an undeclared state could not be written, and a \
             misspelt name would silently make a transition that never fires.\n\nExample:\n    states:\n      - \
             state_name: pending\n    transitions:\n      - {from_state: pending, to_state: done, trigger: finish}\n\n\
             Fix: declare the state under `states`, or correct the name (the hint lists the declared ones). \
             `from_state: \"*\"` means every state."
        }
        Code::StateMachineInitialState => {
            "A `state_machine` must say where it starts: `initial_state` names one of the declared `states`. It \
             becomes `State::INITIAL`, and the unreachable-state check starts from it.\n\nFix: add \
             `initial_state: <state_name>` to the section, or correct the name (the hint lists the declared \
             states)."
        }
        Code::StateMachineAmbiguousTransition => {
            "Two transitions leave the same state on the same trigger, and the generated transition function \
             could not choose between them: the earlier one has no condition (so the later one would never be \
             taken), or both have the same conditions. Transitions on one state and trigger are tried in \
             contract order and the first whose conditions all hold is taken; only a later transition with no \
             condition (a fallback) or different conditions makes sense.\n\nExample:\n    - {from_state: a, \
             to_state: b, trigger: go}\n    - {from_state: a, to_state: c, trigger: go}\n\nFix: give the \
             transitions different triggers, or add `conditions` to the earlier one that tell them apart."
        }
        Code::StateMachineUnreachableState => {
            "No chain of transitions leads from `initial_state` to this state, so the state machine can never \
             be in it. This is usually a missing transition or a misspelt `to_state`. The state is still \
             generated, so code that names it keeps compiling.\n\nFix: add a transition into the state, or \
             remove the state."
        }
        Code::StateMachineTerminalTransition => {
            "A state marked terminal (`is_terminal: true` or listed in `terminal_states`) has transitions \
             leaving it. `State::is_terminal` says the state machine is done there, so either the flag or the \
             transitions are wrong. The transitions are still generated.\n\nFix: remove the terminal flag if the \
             state can be left (a reset), or remove the transitions."
        }
        Code::StateMachineGuard => {
            "A transition condition is not one the generator can turn into a check. The understood forms are \
             `{expression: \"<field> <operator> <value>\"}` with the operators equals, not_equals, ==, !=, \
             greater_than, less_than, greater_than_or_equal, less_than_or_equal, >, <, >=, <=, min_length, \
             max_length, in, not_in, contains, exists, not_exists (`_` as value where none is needed), and \
             `<field> is_present` / `<field> is_absent`; `<field>` may be a dotted path into the data. Anything \
             else (other operators, free text, regular expressions) becomes a guard method of the \
             `StateMachineActions` trait that the node's `node.rs` implements; the transition is taken only \
             when the method returns true. Nothing is dropped.\n\nExample:\n    conditions:\n      - \
             expression: \"score above_policy_threshold\"\n\nFix: rewrite the condition in an understood form, \
             or implement the guard method the message names."
        }
        Code::WorkflowCycle => {
            "The steps of `workflow_coordination` (the entries of `execution_graph.nodes`) depend on each other \
             in a circle, through `depends_on` or `execution_graph.edges`, so none of them can ever start. The \
             message lists the cycle in dependency order (`a → b → a`: a depends on b, b depends on a).\n\n\
             Example:\n    - node_id: a\n      depends_on: [b]\n    - node_id: b\n      depends_on: [a]\n\n\
             Fix: remove one dependency of the cycle; a step that needs a later step's output is usually two steps."
        }
        Code::WorkflowUnknownStep => {
            "A `depends_on` entry (or an edge's `from_node`/`to_node`) names a step id that no entry of \
             `execution_graph.nodes` has. Step ids are compared exactly.\n\nExample:\n    - node_id: score\n      \
             depends_on: [probe]   # no step is called probe\n\nFix: use the `node_id` of an existing step, or add \
             the missing step."
        }
        Code::WorkflowDuplicateStep => {
            "Two entries of `execution_graph.nodes` have the same `node_id`, so a dependency on that id would be \
             ambiguous and the generated `Step` enum would have two equal variants.\n\nFix: rename one of them \
             (and the `depends_on` entries meant for it)."
        }
        Code::WorkflowRule => {
            "A value of `coordination_rules` (or a step's `node_type`/`timeout_ms`) cannot be used: an unknown \
             `execution_mode` (known: sequential, parallel) or `failure_recovery_strategy` (known: fail_fast, \
             retry, continue), a limit out of range, or two settings that contradict each other, such as \
             `execution_mode: parallel` with `parallel_execution_allowed: false`, `sequential` with \
             `max_parallel_steps` above 1, or `fail_fast` with `allow_partial_completion: true`.\n\nFix: use one \
             of the known values, or drop one of the two contradicting settings."
        }
        Code::WorkflowNoSteps => {
            "`workflow_coordination` is present but `execution_graph.nodes` is empty: a workflow needs at least \
             one step.\n\nFix: list the steps under `workflow_definition.execution_graph.nodes`, or remove the \
             section."
        }
        Code::InvalidRouting => {
            "`handler_routing` says which handler method takes a request, and this one cannot be turned into a \
             dispatch: `routing_strategy` is missing or not one of `operation_match` (by the request's \
             `operation`), `payload_type_match` (by the payload's type tag: `payload_type`, `event_type` or the \
             `event_model` class) or `topic_match` (by the topic the request came from); `handlers` is not a \
             non-empty list of mappings; an entry has no key for the strategy (`operation` or \
             `supported_operations`; `payload_type`, `event_type`, `event_model` or `operation`; `topic`); or \
             `default_handler` names no handler of the list and is not a class path.\n\nExample:\n    \
             handler_routing:\n      routing_strategy: operation_match\n      handlers:\n        - handler: \
             {name: HandlerSend}\n\nFix: give the entry the key its strategy matches on: `- {operation: send, \
             handler: {name: HandlerSend}}`."
        }
        Code::DuplicateRoute => {
            "Two entries of `handler_routing.handlers` accept the same operation, type tag or topic, so a request \
             with that key would have two handlers; the generated dispatch would pick one silently. Both places \
             are named.\n\nExample:\n    handlers:\n      - {operation: send, handler: {name: A}}\n      - \
             {operation: send, handler: {name: B}}\n\nFix: keep one entry per key, or give the second its own \
             key."
        }
        Code::InvalidTopic => {
            "An `event_bus` topic is neither in the topic grammar \
             `onex.<evt|cmd|intent|dlq>.<producer>.<event>.v<N>` (producer: `[a-z0-9-]+`; event: one or more \
             `[a-z0-9_-]+` segments joined by dots; N: a positive integer without leading zeros) nor in one of \
             the two legacy forms: `onex.dlq.<intents|events|commands>.v<N>` and the unversioned \
             `onex.<domain>.<name>` (exactly three segments, domain not a kind; the runtime's \
             `onex.runtime.subscriptions`). A topic is \
             typed once, as a constant of the node's `topics.rs`, so a wrong one would reach every publisher \
             and subscriber.\n\nExample:\n    event_bus:\n      subscribe_topics: [onex.Events.registration]\n\n\
             Fix: write the topic in the grammar: `onex.evt.registration.node-registered.v1`."
        }
        Code::InvalidEventBus => {
            "`event_bus` must be a mapping whose `subscribe_topics`, `publish_topics` and `dlq_topics` (each \
             optional) are lists; each item is a topic string or a mapping `{topic: …, topic_config: {…}}`. \
             Anything else cannot become a topic constant. A topic listed twice in one list is reported too, \
             since each topic gets one constant.\n\nExample:\n    event_bus:\n      publish_topics: \
             onex.evt.x.done.v1\n\nFix: make it a list: `publish_topics: [onex.evt.x.done.v1]`."
        }
        Code::FieldRemoved => {
            "`codegen breaking` found a property of an input or output model (or of a type they use) in the \
             baseline that the new contract no longer has. A consumer that reads the field from the node's JSON \
             finds it missing; Rust code that names the field no longer compiles. When exactly one property of \
             the same type was added to the same object, the finding points at it and says the field may have \
             been renamed: a rename is a removal plus an addition for every consumer. Wire level.\n\nExample:\n    old: \
             properties: {user_id: {type: string}}\n    new: properties: {account_id: {type: \
             string}}\n\nFix: keep the old field beside the new one (say in its description that it is \
             deprecated) and remove it in a new major version."
        }
        Code::TypeChanged => {
            "A property, array item or map value holds a different kind of value than in the baseline: another \
             JSON type (string to integer), another string or integer `format` (`uuid` to plain string, `int32` \
             to `int64`), another `minimum`, an object turned into a map, or another shared type. Consumers that \
             parse the old type fail on the new one. Types are compared by what they hold, `$ref`s resolved on \
             both sides, so renaming a definition alone is no finding. Wire level.\n\nExample:\n    old: count: \
             {type: integer}\n    new: count: {type: string}\n\nFix: keep the type; add a field of the new type \
             beside the old one and retire the old one in a new major version."
        }
        Code::EnumNarrowed => {
            "A string enum lost a value, or a tagged union (`oneOf` with `x-tag`) lost an arm. When the enum is \
             read from an input, consumers that send the value are refused (wire level); when only outputs carry \
             it, no consumer of the JSON sees a difference, but Rust code that matches on the variant no longer \
             compiles (source level). New values are notes (CG0076).\n\nExample:\n    old: mode: {type: string, \
             enum: [fast, safe]}\n    new: mode: {type: string, enum: [safe]}\n\nFix: keep the value (the node \
             may answer it with an error) until no consumer uses it, or remove it in a new major version."
        }
        Code::MadeRequired => {
            "A property that was optional became required. On an input without a `default`, consumers that leave \
             it out are now refused (wire level). On an output, or on an input whose new `default` fills it, the \
             JSON is still accepted, but the generated Rust field turns from `Option<T>` into `T`, so Rust code \
             that builds or reads it must change (source level).\n\nExample:\n    old: required: [id]\n    new: \
             required: [id, region]\n\nFix: keep the property optional, or give it a `default`; or make it \
             required in a new major version."
        }
        Code::MadeOptional => {
            "A property that was always present became optional. On an output, consumers that count on it may now \
             find it missing (wire level). On an input every old message is still accepted, but the generated \
             Rust field turns from `T` into `Option<T>` (source level). A property that stays filled by a \
             `default` is no finding: the generated code always writes it.\n\nExample:\n    old: required: \
             [status]\n    new: required: []\n\nFix: keep the property required on outputs; if it can truly be \
             absent now, make the change in a new major version."
        }
        Code::NewRequiredField => {
            "A new property is required and has no `default`. On an input, every consumer that sends the old \
             message is refused (wire level). On an output no JSON consumer breaks, but the generated `new` of \
             the output takes one more argument (source level).\n\nExample:\n    new: properties: {tenant: {type: \
             string}}\n         required: [tenant]\n\nFix: make the new property optional, or give it a `default` \
             (`default: public`), so messages without it are still accepted."
        }
        Code::OperationRemoved => {
            "An operation of the node in the baseline (a value of the input's `operation_type` enum, a route of \
             `handler_routing`, or the single `process` operation) is gone. Consumers that call it get a \
             VALIDATION_ERROR instead of an answer, and the handler trait loses the method. Wire level. The \
             finding points at where the new contract declares its operations, with the old declaration as a \
             related location.\n\nExample:\n    old: operation_type: {enum: [get, put, delete]}\n    new: \
             operation_type: {enum: [get, put]}\n\nFix: keep the operation (it may answer with an error \
             explaining what replaced it) until no consumer calls it, or remove it in a new major version."
        }
        Code::TimeoutChanged => {
            "An operation's timeout (its `io_operations` entry, `handler_routing.max_timeout_seconds` or \
             `default_timeout_seconds`, else 30 s) changed by at least a factor of two. Halved or worse is an \
             error: calls that used to finish now end in OPERATION_TIMEOUT. Doubled or more is a warning: callers \
             whose own deadline is shorter give up before the node answers. Smaller changes are tuning and not \
             reported; the threshold is `TIMEOUT_SHRINK_RATIO` (0.5) in codegen/src/breaking/rules.rs. Wire \
             level.\n\nExample:\n    old: timeout_seconds: 30\n    new: timeout_seconds: 5\n\nFix: keep the \
             timeout, or change it in smaller steps that callers can absorb."
        }
        Code::TopicRemoved => {
            "A topic of `event_bus` (`subscribe_topics`, `publish_topics` or `dlq_topics`) is gone from its list. \
             A removed publish topic leaves its consumers without events; a removed subscribe topic leaves \
             producers publishing to nobody. One topic out and one in of the same list is reported as a possible \
             rename, which is the same break. Wire level.\n\nExample:\n    old: publish_topics: \
             [onex.evt.cache.written.v1]\n    new: publish_topics: [onex.evt.cache.stored.v1]\n\nFix: keep the \
             old topic beside the new one until every producer and consumer has moved; a new topic version \
             (`.v2`) goes beside the old one."
        }
        Code::StateRemoved => {
            "A state of the contract's `state_machine` is gone. Stored data and events may still name it, and a \
             consumer reading them can no longer parse the state (the generated `State` enum loses the variant). \
             Wire level.\n\nExample:\n    old: states: [{state_name: pending}, {state_name: paused}, {state_name: \
             done}]\n    new: states: [{state_name: pending}, {state_name: done}]\n\nFix: keep the state, \
             unreachable if need be, until no stored data or event names it; or remove it in a new major version."
        }
        Code::TriggerRemoved => {
            "A trigger that a transition of the baseline's `state_machine` used is used by no transition of the \
             new one, so the generated `Trigger` enum loses it and a consumer that sends it gets an error. Wire \
             level.\n\nExample:\n    old: transitions: [{from_state: running, to_state: paused, trigger: \
             pause}]\n    new: transitions: []\n\nFix: keep a transition on the trigger (to the same state, if it \
             should do nothing) until no consumer sends it."
        }
        Code::NodeKindChanged => {
            "The node's `node_type` changed (say COMPUTE to EFFECT). The kind decides the runtime trait the node \
             implements and what it may do (only EFFECT nodes do I/O), so every caller and the registration \
             change. Wire level.\n\nExample:\n    old: node_type: COMPUTE\n    new: node_type: EFFECT\n\nFix: \
             keep the kind; a node of another kind is another node: give it its own name (and folder)."
        }
        Code::DependencyRemoved => {
            "A `protocol` or `service` dependency with a `rust_type` is gone. Those are the fields of the \
             generated node's `Dependencies`, which Rust code fills from the container, so code that provides the \
             dependency no longer compiles. The JSON on the wire is not affected: source level.\n\nExample:\n    \
             old: dependencies: [{name: event_bus, type: protocol, rust_type: dyn \
             onex_runtime::event_bus::EventPublisher}]\n    new: dependencies: []\n\nFix: keep the dependency \
             with `required: false` until callers stop providing it."
        }
        Code::NodeRemoved => {
            "A node contract in the baseline has no version left in the new contracts, or its newest version was \
             removed and only older ones remain: every consumer of the node loses it (error, wire level). \
             Removing an older version while a newer one remains is a note: that version was retired. The finding \
             is located in the baseline's file, since the new side has none.\n\nExample:\n    old: \
             contracts/nodes/node_cache_writer_effect/v1_0_0/contract.yaml\n    new: (deleted)\n\nFix: keep the \
             contract until no consumer uses the node."
        }
        Code::VersionNotBumped => {
            "The contract's content changed (comments and layout aside) but its `contract_version` is the same as \
             in the baseline, so consumers cannot tell the two apart. A warning, whether or not the change breaks \
             anything: breaking findings of the same contract are errors of their own.\n\nExample:\n    old: \
             contract_version: {major: 1, minor: 0, patch: 0}, five operations\n    new: contract_version: \
             {major: 1, minor: 0, patch: 0}, six operations\n\nFix: bump the version: the patch version for \
             fixes, the minor version for additions, a new major version directory (`v2_0_0`) for breaking \
             changes."
        }
        Code::MajorVersionBreak => {
            "The new contract is a new major version of the baseline's (a `v2_0_0` directory succeeding \
             `v1_x_y`), so its breaking changes are allowed: each is reported as a note ending with `(allowed: \
             new major version 1 → 2)`, and this note counts them at the new `contract_version`. The check exits \
             0 for them.\n\nExample:\n    old: v1_0_0 with the operation `purge`\n    new: v2_0_0 without \
             it\n\nFix: nothing to fix; keep serving the previous major version until its consumers have moved."
        }
        Code::SafeAddition => {
            "A compatible change, reported so that a reviewer sees the whole difference: a new optional property \
             (or one with a `default`), a new operation, a new enum value or union arm, a new topic, a new state \
             or trigger, a new node. Consumers that do not know the addition ignore it. Consumers that match on \
             every value of an enum should expect new values.\n\nExample:\n    new: properties: {trace_id: {type: \
             string}}   # not required\n\nFix: nothing to fix; a note never fails the check."
        }
        Code::DependencyRequired => {
            "A `protocol` or `service` dependency with a `rust_type` is new and `required: true`, or was \
             optional and became required. The generated node's `new` fails with a missing dependency where the \
             caller's container does not register it, so code that created the node before fails now. The JSON \
             on the wire is not affected: source level.\n\nExample:\n    new: dependencies: [{name: \
             consul_client, type: service, rust_type: onex_runtime::consul::ConsulClient, required: true}]\n\n\
             Fix: add the dependency with `required: false` and let the node answer without it (with an error \
             naming what is missing), or require it in a new major version."
        }
        Code::RoutingNarrowed => {
            "`handler_routing` routed a request that it no longer routes: a route dropped one of the keys it \
             accepted (an operation name of `supported_operations`, a payload type, a topic) and no other route \
             took it, or `routing_strategy` changed, so the same keys now select by something else. Consumers \
             sending such a request get a VALIDATION_ERROR listing what is accepted. A route removed with its \
             operation is CG0066. Wire level.\n\nExample:\n    old: supported_operations: [ledger.read, \
             ledger.scan]\n    new: supported_operations: [ledger.read]\n\nFix: keep accepting the key (the \
             handler may answer it with an error) until no consumer sends it, or drop it in a new major version."
        }
    };
    format!("{}: {}\n\n{}\n", code.as_str(), code.summary(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_explanation_with_a_fix() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let text = explain(code);
            assert!(text.starts_with(code.as_str()), "{text}");
            assert!(text.len() > 200, "{} is too short", code.as_str());
            assert!(text.contains("Fix") || code == Code::NotANodeContract, "{} has no fix", code.as_str());
            assert!(seen.insert(text));
        }
    }

    #[test]
    fn parses_codes() {
        assert_eq!(parse_code("CG0004"), Some(Code::MissingKey));
        assert_eq!(parse_code("cg4"), Some(Code::MissingKey));
        assert_eq!(parse_code("1"), Some(Code::YamlSyntax));
        assert_eq!(parse_code("CG0040"), Some(Code::WorkflowCycle));
        assert_eq!(parse_code("CG0000"), None);
        assert_eq!(parse_code("CG0030"), Some(Code::StateMachineUnknownState));
        assert_eq!(parse_code("cg35"), Some(Code::StateMachineGuard));
        assert_eq!(parse_code("CG9999"), None);
        assert_eq!(parse_code("nope"), None);
    }
}
