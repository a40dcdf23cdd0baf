//! Every name the generator makes: case conversion, Rust identifiers (keyword escapes, leading
//! digits), the names contracts must follow, and free names for things that collide. Every
//! stage (dialect normalization, validation, the model, the emitter, `codegen new`) names
//! through here, so one contract name becomes the same Rust name wherever it is used.

use std::borrow::Cow;

use heck::{ToSnakeCase, ToUpperCamelCase};

/// Type names that would shadow an item of the Rust prelude the generated code uses. A contract
/// of our dialect that uses one is refused; a foreign definition gets a `Model` prefix.
pub const PRELUDE_NAMES: [&str; 11] =
    ["Box", "Err", "None", "Ok", "Option", "Result", "Self", "Some", "Sized", "String", "Vec"];

/// Rust's keywords, strict and reserved, in every edition the generated code may be read in.
pub const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
    "true", "try", "type", "typeof", "union", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Keywords (and `_`) that cannot be raw identifiers; they get a `_` suffix instead.
const NOT_RAW: [&str; 5] = ["crate", "self", "super", "Self", "_"];

/// `foo_barBaz-qux` → `FooBarBazQux`.
pub fn to_pascal_case(name: &str) -> String {
    // One word of lower-case letters and digits (most enum values): heck capitalizes it. The
    // shortcut matters for an enum of hundreds of thousands of values; a unit test compares it
    // with heck.
    if name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) && !name.is_empty() {
        let mut out = name.to_owned();
        out[..1].make_ascii_uppercase();
        return out;
    }
    word_input(name).to_upper_camel_case()
}

/// `FooBar-baz` → `foo_bar_baz`.
pub fn to_snake_case(name: &str) -> String {
    word_input(name).to_snake_case()
}

/// `name` prepared for heck's word splitting, so that the words are the generator's: only ASCII
/// letters and digits make words (any other character separates them; heck would keep Unicode
/// letters, which are no Rust identifier characters the generated code wants), and an upper-case
/// letter after a digit starts a word (`V2API` → `v2_api`, `2FA` → `2_fa`; heck would start one
/// there only when the letter before the digits is lower case). Everything else is heck's rule:
/// splits at non-alphanumerics, lower→upper and acronym→word (`HTTPServer` → `Http|Server`).
fn word_input(name: &str) -> Cow<'_, str> {
    let needs_adjusting = !name.is_ascii()
        || name.as_bytes().windows(2).any(|pair| pair[0].is_ascii_digit() && pair[1].is_ascii_uppercase());
    if !needs_adjusting {
        return Cow::Borrowed(name);
    }
    let mut adjusted = String::with_capacity(name.len() + 4);
    let mut previous = None;
    for c in name.chars() {
        if !c.is_ascii() {
            adjusted.push('_');
        } else {
            if c.is_ascii_uppercase() && previous.is_some_and(|p: char| p.is_ascii_digit()) {
                adjusted.push('_');
            }
            adjusted.push(c);
        }
        previous = Some(c);
    }
    Cow::Owned(adjusted)
}

/// Whether `name` is lower snake case (`[a-z][a-z0-9]*(_[a-z0-9]+)*`).
pub fn is_snake_case(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// Whether `name` is PascalCase (`[A-Z][A-Za-z0-9]*`).
pub fn is_pascal_case(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A snake_case identifier for `wire`: keywords become raw identifiers (`r#type`), the few that
/// cannot be raw get a `_` suffix, and a leading digit gets a `_` prefix.
pub fn field_ident(wire: &str) -> String {
    let mut ident = to_snake_case(wire);
    if ident.is_empty() {
        ident = "field".to_owned();
    }
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    escape_keyword(ident)
}

fn escape_keyword(ident: String) -> String {
    if NOT_RAW.contains(&ident.as_str()) {
        format!("{ident}_")
    } else if KEYWORDS.contains(&ident.as_str()) {
        format!("r#{ident}")
    } else {
        ident
    }
}

/// An identifier made by [`field_ident`] without its `r#` (the name it has on the wire side).
pub fn unraw(ident: &str) -> &str {
    ident.strip_prefix("r#").unwrap_or(ident)
}

/// A PascalCase variant for an enum value.
pub fn variant_ident(wire: &str) -> String {
    let mut ident = to_pascal_case(wire);
    if ident.is_empty() {
        ident = "Empty".to_owned();
    }
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, 'V');
    }
    if ident == "Self" {
        ident = "SelfValue".to_owned();
    }
    ident
}

/// The Rust type for a definition of a foreign contract: PascalCase; a name that would start
/// with a digit or shadow one of [`PRELUDE_NAMES`] gets a `Model` prefix.
pub fn foreign_type_name(name: &str) -> String {
    let mut name = name.to_owned();
    if !is_pascal_case(&name) {
        let converted = to_pascal_case(&name);
        name = if converted.starts_with(|c: char| c.is_ascii_alphabetic()) {
            converted
        } else {
            format!("Model{converted}")
        };
    }
    if PRELUDE_NAMES.contains(&name.as_str()) {
        name = format!("Model{name}");
    }
    name
}

/// A dependency name of a foreign contract: lower snake case, starting with a letter
/// (`dependency_` prefix otherwise). Not yet unique: see [`first_free`].
pub fn foreign_dependency_name(name: &str) -> String {
    let converted = to_snake_case(name);
    if converted.is_empty() || converted.starts_with(|c: char| c.is_ascii_digit()) {
        format!("dependency_{converted}")
    } else {
        converted
    }
}

/// `base` if it is not taken, else the first of `base_2`, `base_3`, … that is not.
pub fn first_free(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2u32..)
        .map(|n| format!("{base}_{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| format!("{base}_copy"))
}

/// The first of `node_<core>_2_<kind>`, `node_<core>_3_<kind>`, … that is not taken, for a
/// node name that another contract already uses.
pub fn unique_node_name(name: &str, kind_suffix: &str, taken: impl Fn(&str) -> bool) -> String {
    let core = node_core(name, kind_suffix);
    (2u32..)
        .map(|n| format!("node_{core}_{n}_{kind_suffix}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| format!("{name}_copy"))
}

/// `name` as `node_<name>_<kind>` in lower snake case (`kind` in any case, e.g. `EFFECT`).
pub fn convert_node_name(name: &str, kind: Option<&str>) -> String {
    let snake = to_snake_case(name);
    let core = snake.strip_prefix("node_").unwrap_or(&snake).to_owned();
    let Some(kind) = kind.map(str::to_ascii_lowercase) else { return format!("node_{core}") };
    let suffix = format!("_{kind}");
    let core = core.strip_suffix(&suffix).unwrap_or(&core).to_owned();
    let core = if core.is_empty() || core == kind { "unnamed".to_owned() } else { core };
    let core = if core.starts_with(|c: char| c.is_ascii_digit()) { format!("n{core}") } else { core };
    format!("node_{core}_{kind}")
}

/// The part of a node name between `node_` and `_<kind>` (`node_postgres_effect` → `postgres`).
pub fn node_core<'a>(name: &'a str, kind_suffix: &str) -> &'a str {
    let core = name.strip_prefix("node_").unwrap_or(name);
    core.strip_suffix(&format!("_{kind_suffix}")).unwrap_or(core)
}

/// The `OPERATION_<NAME>` constant for an operation's wire name.
pub fn operation_const(wire: &str) -> String {
    format!("OPERATION_{}", to_snake_case(wire).to_ascii_uppercase())
}

/// The method name of a state-machine condition the generator cannot evaluate: `guard_` and
/// the condition's text (its name when it has one) in snake case. Not yet unique: see
/// [`first_free`].
pub fn guard_method(text: &str) -> String {
    let words = to_snake_case(text);
    if words.is_empty() { "guard".to_owned() } else { format!("guard_{words}") }
}

/// serde's `rename_all` rules and the wire names they give, as serde_derive computes them, so the
/// emitter can tell when one rule on a type replaces a `rename` on each of its names. Listed in
/// the order a tie between two of them is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerdeRule {
    /// `snake_case`
    Snake,
    /// `camelCase`
    Camel,
    /// `SCREAMING_SNAKE_CASE`
    ScreamingSnake,
    /// `kebab-case`
    Kebab,
    /// `SCREAMING-KEBAB-CASE`
    ScreamingKebab,
    /// `lowercase`
    Lower,
    /// `UPPERCASE`
    Upper,
    /// `PascalCase`
    Pascal,
}

impl SerdeRule {
    /// Every rule, in tie-break order.
    pub const ALL: [SerdeRule; 8] = [
        SerdeRule::Snake,
        SerdeRule::Camel,
        SerdeRule::ScreamingSnake,
        SerdeRule::Kebab,
        SerdeRule::ScreamingKebab,
        SerdeRule::Lower,
        SerdeRule::Upper,
        SerdeRule::Pascal,
    ];

    /// The rule as `#[serde(rename_all = "…")]` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SerdeRule::Snake => "snake_case",
            SerdeRule::Camel => "camelCase",
            SerdeRule::ScreamingSnake => "SCREAMING_SNAKE_CASE",
            SerdeRule::Kebab => "kebab-case",
            SerdeRule::ScreamingKebab => "SCREAMING-KEBAB-CASE",
            SerdeRule::Lower => "lowercase",
            SerdeRule::Upper => "UPPERCASE",
            SerdeRule::Pascal => "PascalCase",
        }
    }

    /// The wire name serde gives a PascalCase variant under this rule (serde_derive's
    /// `RenameRule::apply_to_variant`).
    pub fn variant(self, ident: &str) -> String {
        let mut out = String::with_capacity(ident.len() + 4);
        self.each_variant_char(ident, &mut |c| out.push(c));
        out
    }

    /// Whether [`SerdeRule::variant`] of `ident` is `wire`, without building it: asked of
    /// every value of an enum, which may have hundreds of thousands.
    pub fn gives_variant(self, ident: &str, wire: &str) -> bool {
        let mut expected = wire.chars();
        let mut same = true;
        self.each_variant_char(ident, &mut |c| same &= expected.next() == Some(c));
        same && expected.next().is_none()
    }

    /// The wire name serde gives a snake_case field under this rule (serde_derive's
    /// `RenameRule::apply_to_field`).
    pub fn field(self, ident: &str) -> String {
        let mut out = String::with_capacity(ident.len() + 4);
        self.each_field_char(ident, &mut |c| out.push(c));
        out
    }

    /// Whether [`SerdeRule::field`] of `ident` is `wire`, without building it.
    pub fn gives_field(self, ident: &str, wire: &str) -> bool {
        let mut expected = wire.chars();
        let mut same = true;
        self.each_field_char(ident, &mut |c| same &= expected.next() == Some(c));
        same && expected.next().is_none()
    }

    /// The characters of [`SerdeRule::variant`], one at a time. The snake rules put a separator
    /// before every upper-case letter but the first, lower the letters, then the screaming ones
    /// raise them again and the kebab ones turn every `_` (put in or not) into `-`.
    fn each_variant_char(self, ident: &str, emit: &mut impl FnMut(char)) {
        use SerdeRule::{Camel, Kebab, Lower, Pascal, ScreamingKebab, ScreamingSnake, Snake, Upper};
        match self {
            Pascal => ident.chars().for_each(emit),
            Lower => ident.chars().for_each(|c| emit(c.to_ascii_lowercase())),
            Upper => ident.chars().for_each(|c| emit(c.to_ascii_uppercase())),
            Camel => {
                for (i, c) in ident.chars().enumerate() {
                    emit(if i == 0 { c.to_ascii_lowercase() } else { c });
                }
            }
            Snake | ScreamingSnake | Kebab | ScreamingKebab => {
                let screaming = matches!(self, ScreamingSnake | ScreamingKebab);
                let separator = if matches!(self, Kebab | ScreamingKebab) { '-' } else { '_' };
                for (i, c) in ident.char_indices() {
                    if i > 0 && c.is_uppercase() {
                        emit(separator);
                    }
                    let c = if screaming { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
                    emit(if c == '_' { separator } else { c });
                }
            }
        }
    }

    /// The characters of [`SerdeRule::field`], one at a time. The Pascal and camel rules drop
    /// every `_` and raise the letter after it (and the first); camel then lowers the first.
    fn each_field_char(self, ident: &str, emit: &mut impl FnMut(char)) {
        use SerdeRule::{Camel, Kebab, Lower, Pascal, ScreamingKebab, ScreamingSnake, Snake, Upper};
        match self {
            Lower | Snake => ident.chars().for_each(emit),
            Upper | ScreamingSnake => ident.chars().for_each(|c| emit(c.to_ascii_uppercase())),
            Kebab => ident.chars().for_each(|c| emit(if c == '_' { '-' } else { c })),
            ScreamingKebab => ident.chars().for_each(|c| emit(if c == '_' { '-' } else { c.to_ascii_uppercase() })),
            Pascal | Camel => {
                let (mut capitalize, mut first) = (true, true);
                for c in ident.chars() {
                    if c == '_' {
                        capitalize = true;
                        continue;
                    }
                    let c = if std::mem::take(&mut capitalize) { c.to_ascii_uppercase() } else { c };
                    let c = if std::mem::take(&mut first) && self == Camel { c.to_ascii_lowercase() } else { c };
                    emit(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lower_case_word_is_capitalized_as_heck_does() {
        let letters = "az09mq";
        let mut names: Vec<String> = vec!["v0".into(), "v478334".into(), "0".into(), "9lives".into(), "x".into()];
        for a in letters.chars() {
            for b in letters.chars() {
                for c in letters.chars() {
                    names.push(format!("{a}{b}{c}"));
                    names.push(format!("{a}{b}{c}{a}{a}"));
                }
            }
        }
        for name in &names {
            assert_eq!(to_pascal_case(name), word_input(name).to_upper_camel_case(), "{name}");
        }
        // Anything else goes to heck.
        assert_eq!(to_pascal_case("v_last"), "VLast");
        assert_eq!(to_pascal_case("V2API"), "V2Api");
    }

    #[test]
    fn every_keyword_becomes_a_usable_identifier() {
        for kw in KEYWORDS.iter().chain(&["_", "r#type", "Self"]) {
            let ident = field_ident(kw);
            assert!(syn::parse_str::<syn::Ident>(&ident).is_ok(), "{kw} -> {ident}");
            let variant = variant_ident(kw);
            assert!(syn::parse_str::<syn::Ident>(&variant).is_ok(), "{kw} -> {variant}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(to_pascal_case("node_postgres_connection_manager_effect"), "NodePostgresConnectionManagerEffect");
        assert_eq!(to_pascal_case("HTTPServer"), "HttpServer");
        assert_eq!(to_snake_case("camelCaseID"), "camel_case_id");
        assert_eq!(to_snake_case("ModelXInput"), "model_x_input");
        assert_eq!(field_ident("type"), "r#type");
        assert_eq!(field_ident("self"), "self_");
        assert_eq!(field_ident("gen"), "r#gen");
        assert_eq!(field_ident("2fa"), "_2fa");
        assert_eq!(variant_ident("read-only"), "ReadOnly");
        assert_eq!(variant_ident("5xx"), "V5xx");
        assert_eq!(variant_ident("Self"), "SelfValue");
    }

    /// The cases where heck alone would name differently; the adjustment in [`word_input`]
    /// keeps the names generated code already uses.
    #[test]
    fn words_where_heck_differs_keep_the_generators_names() {
        // An upper-case letter after a digit starts a word, whatever came before the digit.
        assert_eq!(to_snake_case("2FA"), "2_fa");
        assert_eq!(field_ident("2FA"), "_2_fa");
        assert_eq!(to_snake_case("V2API"), "v2_api");
        assert_eq!(to_snake_case("A2B"), "a2_b");
        assert_eq!(to_pascal_case("S3URL"), "S3Url");
        assert_eq!(to_pascal_case("2FA"), "2Fa");
        assert_eq!(variant_ident("2FA"), "V2Fa");
        // Heck already splits there when a lower-case letter precedes the digit.
        assert_eq!(to_snake_case("v2Beta"), "v2_beta");
        // Non-ASCII characters separate words, also letters.
        assert_eq!(to_snake_case("café_au_lait"), "caf_au_lait");
        assert_eq!(to_pascal_case("naïve"), "NaVe");
        assert_eq!(to_snake_case("Größe"), "gr_e");
        assert_eq!(field_ident("ü"), "field");
        assert_eq!(variant_ident("Ω"), "Empty");
        // Leading and repeated separators vanish, as before.
        assert_eq!(to_snake_case("__private__name"), "private_name");
        assert_eq!(to_pascal_case("_leading"), "Leading");
        assert_eq!(field_ident("_"), "field");
    }

    #[test]
    fn foreign_names() {
        assert_eq!(foreign_type_name("model_user"), "ModelUser");
        assert_eq!(foreign_type_name("3d_point"), "Model3dPoint");
        assert_eq!(foreign_type_name("Result"), "ModelResult");
        assert_eq!(foreign_type_name("ModelX"), "ModelX");
        assert_eq!(foreign_dependency_name("ProtocolEventBus"), "protocol_event_bus");
        assert_eq!(foreign_dependency_name("1st"), "dependency_1st");
        assert_eq!(foreign_dependency_name("!!"), "dependency_");
        assert_eq!(first_free("db", |n| n == "db" || n == "db_2"), "db_3");
        assert_eq!(first_free("db", |_| false), "db");
        assert_eq!(operation_const("executeQuery"), "OPERATION_EXECUTE_QUERY");
        assert_eq!(node_core("node_pg_effect", "effect"), "pg");
    }

    #[test]
    fn node_names() {
        assert_eq!(convert_node_name("consul_adapter", Some("EFFECT")), "node_consul_adapter_effect");
        assert_eq!(convert_node_name("node_x_effect", Some("EFFECT")), "node_x_effect");
        assert_eq!(convert_node_name("NodeHTTPGate", Some("COMPUTE")), "node_http_gate_compute");
        assert_eq!(convert_node_name("effect", Some("EFFECT")), "node_unnamed_effect");
        assert_eq!(convert_node_name("3d", Some("EFFECT")), "node_n3d_effect");
        assert_eq!(convert_node_name("x", None), "node_x");
    }

    #[test]
    fn unique_node_names() {
        let taken = ["node_pg_2_effect".to_owned()];
        assert_eq!(unique_node_name("node_pg_effect", "effect", |c| taken.iter().any(|t| t == c)), "node_pg_3_effect");
        assert_eq!(unique_node_name("node_pg_effect", "effect", |_| false), "node_pg_2_effect");
    }

    #[test]
    fn rules_name_things_as_serde_does() {
        assert_eq!(SerdeRule::Snake.variant("HealthCheck"), "health_check");
        assert_eq!(SerdeRule::ScreamingKebab.variant("HealthCheck"), "HEALTH-CHECK");
        assert_eq!(SerdeRule::Camel.variant("HealthCheck"), "healthCheck");
        assert_eq!(SerdeRule::Camel.field("camel_case_x"), "camelCaseX");
        assert_eq!(SerdeRule::Pascal.field("camel_case"), "CamelCase");
        assert_eq!(SerdeRule::ScreamingKebab.field("a_b"), "A-B");
    }

    /// serde_derive's `RenameRule` as it is written there (string operations on the whole
    /// name), to check the rules applied a character at a time against.
    fn serde_variant(rule: SerdeRule, ident: &str) -> String {
        let snake = || {
            let mut out = String::new();
            for (i, c) in ident.char_indices() {
                if i > 0 && c.is_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        };
        match rule {
            SerdeRule::Pascal => ident.to_owned(),
            SerdeRule::Lower => ident.to_ascii_lowercase(),
            SerdeRule::Upper => ident.to_ascii_uppercase(),
            SerdeRule::Camel => {
                let mut chars = ident.chars();
                chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            SerdeRule::Snake => snake(),
            SerdeRule::ScreamingSnake => snake().to_ascii_uppercase(),
            SerdeRule::Kebab => snake().replace('_', "-"),
            SerdeRule::ScreamingKebab => snake().to_ascii_uppercase().replace('_', "-"),
        }
    }

    fn serde_field(rule: SerdeRule, ident: &str) -> String {
        let pascal = || {
            let mut out = String::new();
            let mut capitalize = true;
            for c in ident.chars() {
                if c == '_' {
                    capitalize = true;
                } else if capitalize {
                    out.push(c.to_ascii_uppercase());
                    capitalize = false;
                } else {
                    out.push(c);
                }
            }
            out
        };
        match rule {
            SerdeRule::Lower | SerdeRule::Snake => ident.to_owned(),
            SerdeRule::Upper | SerdeRule::ScreamingSnake => ident.to_ascii_uppercase(),
            SerdeRule::Pascal => pascal(),
            SerdeRule::Camel => {
                let pascal = pascal();
                let mut chars = pascal.chars();
                chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            SerdeRule::Kebab => ident.replace('_', "-"),
            SerdeRule::ScreamingKebab => ident.to_ascii_uppercase().replace('_', "-"),
        }
    }

    proptest::proptest! {
        #[test]
        fn rules_a_character_at_a_time_name_things_as_serde_does(
            ident in "(_|[a-zA-Z0-9]|é|É|ß|ǅ){0,12}",
            other in "[a-zA-Z_-]{0,6}",
        ) {
            let shorter = |name: &str| name.char_indices().last().map_or(String::new(), |(i, _)| name[..i].to_owned());
            for rule in SerdeRule::ALL {
                let (variant, field) = (serde_variant(rule, &ident), serde_field(rule, &ident));
                proptest::prop_assert_eq!(rule.variant(&ident), variant.clone());
                proptest::prop_assert_eq!(rule.field(&ident), field.clone());
                proptest::prop_assert!(rule.gives_variant(&ident, &variant));
                proptest::prop_assert!(rule.gives_field(&ident, &field));
                for wire in [other.as_str(), &shorter(&variant), &format!("{variant}x")] {
                    proptest::prop_assert_eq!(rule.gives_variant(&ident, wire), wire == variant);
                }
                for wire in [other.as_str(), &shorter(&field), &format!("{field}_")] {
                    proptest::prop_assert_eq!(rule.gives_field(&ident, wire), wire == field);
                }
            }
        }
    }
}
