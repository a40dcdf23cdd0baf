//! Rules over data: the input model and the output model of the old contract are walked beside
//! those of the new one, property by property, `$ref`s resolved on each side, so a renamed
//! definition is compared by what it holds and where it is used, not by its name.
//!
//! Which way data flows decides some rules: the input is written by consumers and read by the
//! node, the output the other way round. A type reached from both is walked once per direction
//! and the stricter finding kept ([`super::dedup`]).

use std::collections::HashSet;

use super::{Level, Sink};
use crate::diagnostics::{Code, Pos};
use crate::validate::{Contract, Definition, Property, RefTarget, Schema, SchemaKind, Spanned};

/// Which way the data of a walk flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Consumers write it, the node reads it.
    Input,
    /// The node writes it, consumers read it.
    Output,
}

/// Where a schema is on both sides and what to call it.
struct At {
    new: Pos,
    old: Pos,
    /// The YAML path on the new side.
    path: String,
    /// `ModelIn.items[].name`: the wire path from the model, for messages.
    name: String,
}

/// Walks the input and the output model of the pair.
pub(super) fn compare<'a>(sink: &mut Sink<'a>) {
    let (old_model, new_model) = (sink.old, sink.new);
    let (old, new) = (&old_model.contract, &new_model.contract);
    let roots = [(Dir::Input, &old.input_model, &new.input_model), (Dir::Output, &old.output_model, &new.output_model)];
    for (dir, o, n) in roots {
        let (Some(od), Some(nd)) = (definition(old, &o.value), definition(new, &n.value)) else { continue };
        let at = At {
            new: nd.name.pos,
            old: od.name.pos,
            path: format!("definitions.{}", nd.name.value),
            name: n.value.clone(),
        };
        let mut walk = Walk { old, new, sink: &mut *sink, dir, visited: HashSet::new() };
        walk.schema(&od.schema, &nd.schema, at);
    }
}

fn definition<'c>(c: &'c Contract, name: &str) -> Option<&'c Definition> {
    c.definitions.iter().find(|d| d.name.value == name)
}

/// `schema` with its `$ref`s to definitions followed, and the definition it ended in.
fn resolve<'c>(c: &'c Contract, schema: &'c Schema) -> (&'c Schema, Option<&'c str>) {
    let (mut current, mut name) = (schema, None);
    // A chain of aliases longer than this is a cycle of `$ref`s; stop there.
    for _ in 0..64 {
        let SchemaKind::Ref(Spanned { value: RefTarget::Definition(target), .. }) = &current.kind else { break };
        let Some(def) = definition(c, target) else { break };
        name = Some(def.name.value.as_str());
        current = &def.schema;
    }
    (current, name)
}

/// What a consumer of the JSON sees of a schema's own shape (not of its parts): two schemas
/// with different heads hold different values.
fn head(c: &Contract, schema: &Schema) -> String {
    match &schema.kind {
        SchemaKind::Ref(target) => match &target.value {
            RefTarget::Dependency(d) => {
                let dep = c.dependencies.iter().find(|x| &x.name.value == d);
                let shown = dep
                    .map_or(d.as_str(), |x| x.rust_type.as_ref().map_or(x.class_name.as_str(), |r| r.value.as_str()));
                format!("the shared type `{shown}`")
            }
            RefTarget::Definition(d) => format!("the unresolved `{d}`"),
        },
        SchemaKind::Tagged { tag, .. } => format!("a union tagged by `{tag}`"),
        SchemaKind::Object { .. } => "an object".into(),
        SchemaKind::Map(_) => "a map".into(),
        SchemaKind::FreeObject => "a free-form object".into(),
        SchemaKind::StringEnum(_) => "a string enum".into(),
        SchemaKind::String { format: None } => "a string".into(),
        SchemaKind::String { format: Some(f) } => format!("a string of format `{f}`"),
        SchemaKind::Integer { format, minimum } => {
            let mut text = "an integer".to_owned();
            if let Some(f) = format {
                text.push_str(&format!(" of format `{f}`"));
            }
            if let Some(m) = minimum {
                text.push_str(&format!(" of minimum {m}"));
            }
            text
        }
        SchemaKind::Number => "a number".into(),
        SchemaKind::Boolean => "a boolean".into(),
        SchemaKind::Array(_) => "an array".into(),
        SchemaKind::Any => "any JSON value".into(),
    }
}

/// Whether a property is required: its own `required: true|false` (older dialect), else the
/// object's `required` list.
fn required(p: &Property, list: &[Spanned<String>]) -> bool {
    p.schema.required_flag.unwrap_or_else(|| list.iter().any(|r| r.value == p.name.value))
}

/// Whether the generated Rust field is an `Option` (neither required nor defaulted).
fn rust_optional(p: &Property, list: &[Spanned<String>]) -> bool {
    !required(p, list) && p.schema.default.is_none()
}

struct Walk<'s, 'a, 'c> {
    old: &'c Contract,
    new: &'c Contract,
    sink: &'s mut Sink<'a>,
    dir: Dir,
    /// (old definition, new definition) pairs already walked: types may be recursive.
    visited: HashSet<(&'c str, &'c str)>,
}

impl<'c> Walk<'_, '_, 'c> {
    fn schema(&mut self, old: &'c Schema, new: &'c Schema, at: At) {
        let (o, o_name) = resolve(self.old, old);
        let (n, n_name) = resolve(self.new, new);
        let (ho, hn) = (head(self.old, o), head(self.new, n));
        if ho != hn {
            self.sink.push(
                Code::TypeChanged,
                Level::Wire,
                at.new,
                &at.path,
                format!("`{}` changed from {ho} to {hn}", at.name),
                Some((at.old, "the old type is here")),
                "keep the type; to change it, add a field of the new type beside the old one and retire the old one in a new major version",
            );
            return;
        }
        if let (Some(a), Some(b)) = (o_name, n_name)
            && !self.visited.insert((a, b))
        {
            return;
        }
        let child = |s: &Schema, t: &Schema, suffix: &str| At {
            new: t.pos,
            old: s.pos,
            path: t.path.clone(),
            name: format!("{}{suffix}", at.name),
        };
        match (&o.kind, &n.kind) {
            (
                SchemaKind::Object { properties: op, required: or },
                SchemaKind::Object { properties: np, required: nr },
            ) => self.object(op, or, np, nr, &at),
            (SchemaKind::Array(a), SchemaKind::Array(b)) => {
                let (a, b): (&'c Schema, &'c Schema) = (a, b);
                self.schema(a, b, child(a, b, "[]"));
            }
            (SchemaKind::Map(a), SchemaKind::Map(b)) => {
                let (a, b): (&'c Schema, &'c Schema) = (a, b);
                self.schema(a, b, child(a, b, ".*"));
            }
            (SchemaKind::StringEnum(a), SchemaKind::StringEnum(b)) => self.values(a, b, &at),
            (SchemaKind::Tagged { arms: a, .. }, SchemaKind::Tagged { arms: b, .. }) => self.arms(a, b, &at),
            _ => {}
        }
    }

    fn object(
        &mut self,
        op: &'c [Property],
        or: &'c [Spanned<String>],
        np: &'c [Property],
        nr: &'c [Spanned<String>],
        at: &At,
    ) {
        let added: Vec<&Property> = np.iter().filter(|q| !op.iter().any(|p| p.name.value == q.name.value)).collect();
        let mut renamed_to: Vec<String> = Vec::new();
        for p in op {
            let Some(q) = np.iter().find(|q| q.name.value == p.name.value) else {
                let old_head = head(self.old, resolve(self.old, &p.schema).0);
                let candidates: Vec<&&Property> =
                    added.iter().filter(|q| head(self.new, resolve(self.new, &q.schema).0) == old_head).collect();
                let (pos, renamed) = match candidates.as_slice() {
                    [q] => {
                        renamed_to.push(q.name.value.clone());
                        (q.name.pos, format!(" or renamed to `{}`", q.name.value))
                    }
                    _ => (at.new, String::new()),
                };
                self.sink.push(
                    Code::FieldRemoved,
                    Level::Wire,
                    pos,
                    &at.path,
                    format!("field `{}.{}` was removed{renamed}", at.name, p.name.value),
                    Some((p.name.pos, "the field was here")),
                    "keep the field (deprecate it in its description); to rename it, add the new name beside the old one and retire the old one in a new major version",
                );
                continue;
            };
            let name = format!("{}.{}", at.name, q.name.value);
            self.requiredness(p, or, q, nr, &name);
            let at = At { new: q.name.pos, old: p.name.pos, path: q.schema.path.clone(), name };
            self.schema(&p.schema, &q.schema, at);
        }
        for q in added.into_iter().filter(|q| !renamed_to.contains(&q.name.value)) {
            let name = format!("{}.{}", at.name, q.name.value);
            if required(q, nr) && q.schema.default.is_none() {
                let (level, why) = match self.dir {
                    Dir::Input => (Level::Wire, "consumers that do not send it are refused"),
                    Dir::Output => (Level::Source, "the generated `new` of the output takes it"),
                };
                self.sink.push(
                    Code::NewRequiredField,
                    level,
                    q.name.pos,
                    &q.schema.path,
                    format!("new field `{name}` is required and has no default: {why}"),
                    Some((at.old, "the baseline has no such field here")),
                    "make the new field optional, or give it a `default`",
                );
            } else {
                self.sink.push(
                    Code::SafeAddition,
                    Level::Wire,
                    q.name.pos,
                    &q.schema.path,
                    format!("new optional field `{name}`"),
                    None,
                    "nothing to do: consumers that do not know the field ignore it",
                );
            }
        }
    }

    /// Optional made required and the reverse, by direction.
    fn requiredness(&mut self, p: &Property, or: &[Spanned<String>], q: &Property, nr: &[Spanned<String>], name: &str) {
        let (was, is) = (required(p, or), required(q, nr));
        let (was_option, is_option) = (rust_optional(p, or), rust_optional(q, nr));
        let wire = match self.dir {
            // Senders that leave it out are refused, unless a default fills it.
            Dir::Input => !was && is && q.schema.default.is_none(),
            // Readers that count on it may now miss it.
            Dir::Output => !was_option && is_option,
        };
        let (code, what) = if (is && !was) || (was_option && !is_option) {
            (Code::MadeRequired, "became required")
        } else {
            (Code::MadeOptional, "became optional")
        };
        if !wire && was_option == is_option {
            return;
        }
        let level = if wire { Level::Wire } else { Level::Source };
        let why = match (wire, self.dir) {
            (true, Dir::Input) => "consumers that leave it out are refused",
            (true, Dir::Output) => "consumers that read it may find it missing",
            (false, _) if is_option => "its Rust field turns from `T` into `Option<T>`",
            (false, _) => "its Rust field turns from `Option<T>` into `T`",
        };
        self.sink.push(
            code,
            level,
            q.name.pos,
            &q.schema.path,
            format!("field `{name}` {what}: {why}"),
            Some((p.name.pos, "the field was declared here")),
            if code == Code::MadeRequired {
                "keep the field optional, or give it a `default` so that senders may still leave it out"
            } else {
                "keep the field required; consumers may rely on it being there"
            },
        );
    }

    fn values(&mut self, old: &[Spanned<String>], new: &[Spanned<String>], at: &At) {
        for v in old.iter().filter(|v| !new.iter().any(|w| w.value == v.value)) {
            let (level, why) = match self.dir {
                Dir::Input => (Level::Wire, "consumers that send it are refused"),
                Dir::Output => (Level::Source, "Rust code matching on its variant no longer compiles"),
            };
            self.sink.push(
                Code::EnumNarrowed,
                level,
                at.new,
                &at.path,
                format!("`{}` lost the value `{}`: {why}", at.name, v.value),
                Some((v.pos, "the value was here")),
                "keep the value (the node may answer it with an error) until no consumer uses it",
            );
        }
        for w in new.iter().filter(|w| !old.iter().any(|v| v.value == w.value)) {
            self.sink.push(
                Code::SafeAddition,
                Level::Wire,
                w.pos,
                &at.path,
                format!("`{}` has a new value `{}`", at.name, w.value),
                None,
                "nothing to do; consumers that match on every value should expect new ones",
            );
        }
    }

    fn arms(&mut self, old: &'c [Spanned<String>], new: &'c [Spanned<String>], at: &At) {
        for arm in old {
            let Some(same) = new.iter().find(|b| b.value == arm.value) else {
                let level = if self.dir == Dir::Input { Level::Wire } else { Level::Source };
                self.sink.push(
                    Code::EnumNarrowed,
                    level,
                    at.new,
                    &at.path,
                    format!("union `{}` lost the arm `{}`", at.name, arm.value),
                    Some((arm.pos, "the arm was here")),
                    "keep the arm until no consumer sends or matches it",
                );
                continue;
            };
            if let (Some(od), Some(nd)) = (definition(self.old, &arm.value), definition(self.new, &same.value)) {
                let at = At {
                    new: nd.name.pos,
                    old: od.name.pos,
                    path: format!("definitions.{}", nd.name.value),
                    name: format!("{}<{}>", at.name, arm.value),
                };
                self.schema(&od.schema, &nd.schema, at);
            }
        }
        for b in new.iter().filter(|b| !old.iter().any(|a| a.value == b.value)) {
            self.sink.push(
                Code::SafeAddition,
                Level::Wire,
                b.pos,
                &at.path,
                format!("union `{}` has a new arm `{}`", at.name, b.value),
                None,
                "nothing to do; consumers that match on every arm should expect new ones",
            );
        }
    }
}
