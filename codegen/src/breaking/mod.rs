//! `codegen breaking`: what an edit of the contracts breaks for the nodes and services that
//! depend on them, found by comparing two sets of contracts read by the same front end
//! ([`crate::load_with`]), so it works for every dialect the generator reads.
//!
//! Invariants:
//! - both sides are [`Loaded`] runs of the front end; nothing here parses YAML of its own
//!   except to tell whether a contract's content changed at all (`content_changed`);
//! - every finding is a [`Diagnostic`] located on the new side (a removed node, which has no
//!   new side, is located in the old file), with the old side as a related location;
//! - each rule has a stable code, a default severity and a level ([`rules`]); the version rule
//!   (`apply_version_rule`) then decides what a breaking finding means for the versions the
//!   two contracts declare;
//! - comparing a set of contracts with itself finds nothing.
//!
//! The rules over data (fields, types, enums, requiredness) are in `schema.rs`; those over the
//! node (operations, timeouts, topics, state machine, kind, dependencies) in `node.rs`; reading a
//! baseline from a git revision or a directory in [`baseline`].

pub mod baseline;
mod node;
pub mod rules;
mod schema;

use std::collections::BTreeMap;

use crate::Loaded;
use crate::diagnostics::{self, Code, Diagnostic, Pos, Severity};
use crate::model::NodeModel;
pub use rules::Level;

/// One finding of a rule: the diagnostic and the level at which it breaks.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub diagnostic: Diagnostic,
    pub level: Level,
}

/// The findings of one comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// Every finding, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Display path → text of every contract of both sides (for snippets).
    pub sources: BTreeMap<String, String>,
    /// How many (old, new) contract pairs were compared.
    pub pairs: usize,
}

/// Compares the contracts of `old` (the baseline) with those of `new`, keeping the findings
/// that break at `level` (notes are always kept). The two sides' display paths must differ
/// (see [`baseline::relabel`]) unless they are the same files.
pub fn compare(old: &Loaded, new: &Loaded, level: Level) -> Report {
    let mut report = Report { sources: merged_sources(old, new), ..Report::default() };
    let old_nodes = by_name(&old.nodes);
    let new_nodes = by_name(&new.nodes);
    let mut findings = Vec::new();
    let kind_changes = kind_changes(&old_nodes, &new_nodes);
    let names: std::collections::BTreeSet<&str> = old_nodes.keys().chain(new_nodes.keys()).copied().collect();
    let empty = BTreeMap::new();
    for name in names {
        if kind_changes.iter().any(|(_, to)| *to == name) {
            continue;
        }
        let new_name = kind_changes.iter().find(|(from, _)| *from == name).map_or(name, |(_, to)| *to);
        let olds = old_nodes.get(name).unwrap_or(&empty);
        let news = new_nodes.get(new_name).unwrap_or(&empty);
        compare_versions(olds, news, level, &mut report, &mut findings);
    }
    finish(report, findings, level)
}

/// Within one set of contracts: each node's previous version against its newest (nodes with
/// one version are not compared).
pub fn compare_previous(loaded: &Loaded, level: Level) -> Report {
    let mut report = Report { sources: loaded.sources.clone(), ..Report::default() };
    let mut findings = Vec::new();
    for versions in by_name(&loaded.nodes).values() {
        let mut newest_first = versions.values().rev();
        if let (Some(newest), Some(previous)) = (newest_first.next(), newest_first.next()) {
            report.pairs += 1;
            findings.extend(compare_pair(previous, newest, level));
        }
    }
    finish(report, findings, level)
}

type Version = (u32, u32, u32);

fn by_name(nodes: &[NodeModel]) -> BTreeMap<&str, BTreeMap<Version, &NodeModel>> {
    let mut map: BTreeMap<&str, BTreeMap<Version, &NodeModel>> = BTreeMap::new();
    for node in nodes {
        map.entry(node.contract.name.value.as_str()).or_default().insert(node.contract.version.value, node);
    }
    map
}

/// Nodes whose kind changed: the kind is part of a node's name (`node_<core>_<kind>`), so such
/// a node is gone under its old name and new under another. A name only on the old side and
/// one only on the new side with the same core are one node: (old name, new name).
fn kind_changes<'n>(
    old: &BTreeMap<&'n str, BTreeMap<Version, &'n NodeModel>>,
    new: &BTreeMap<&'n str, BTreeMap<Version, &'n NodeModel>>,
) -> Vec<(&'n str, &'n str)> {
    let core = |versions: &BTreeMap<Version, &'n NodeModel>| {
        let m = versions.values().next_back()?;
        Some(crate::naming::node_core(&m.contract.name.value, m.contract.kind.suffix()).to_owned())
    };
    let mut changes = Vec::new();
    for (name, versions) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        let Some(wanted) = core(versions) else { continue };
        let matches: Vec<&str> = new
            .iter()
            .filter(|(n, v)| !old.contains_key(*n) && core(v).as_deref() == Some(wanted.as_str()))
            .map(|(n, _)| *n)
            .collect();
        if let [to] = matches.as_slice() {
            changes.push((*name, *to));
        }
    }
    changes
}

fn merged_sources(old: &Loaded, new: &Loaded) -> BTreeMap<String, String> {
    let mut sources = old.sources.clone();
    sources.extend(new.sources.iter().map(|(k, v)| (k.clone(), v.clone())));
    sources
}

/// The versions of one node on both sides: a version on both is compared with itself; a new
/// version with the newest old version below it (the version it succeeds); the newest old
/// version gone from the new side is a removal, an older one gone a retirement (a note) unless
/// a newer version of its major version succeeds it.
fn compare_versions(
    olds: &BTreeMap<Version, &NodeModel>,
    news: &BTreeMap<Version, &NodeModel>,
    level: Level,
    report: &mut Report,
    findings: &mut Vec<Finding>,
) {
    for (version, new) in news {
        let old = olds.get(version).or_else(|| olds.range(..*version).next_back().map(|(_, o)| o));
        match old {
            Some(old) => {
                report.pairs += 1;
                findings.extend(compare_pair(old, new, level));
            }
            None if olds.is_empty() && Some(version) == news.keys().next_back() => {
                let c = &new.contract;
                let (a, b, p) = c.version.value;
                findings.push(Finding {
                    diagnostic: Diagnostic::note(
                        Code::SafeAddition,
                        &c.source.display,
                        c.name.pos,
                        "node_name",
                        format!("new node `{}` v{a}.{b}.{p}", c.name.value),
                    )
                    .with_hint("nothing to do: a new node breaks no consumer"),
                    level: Level::Wire,
                });
            }
            None => {}
        }
    }
    let newest_new = news.keys().next_back().copied();
    for (version, old) in olds {
        if news.contains_key(version) {
            continue;
        }
        // Succeeded by a newer version of the same major version, with which it was compared.
        if news.keys().any(|n| n.0 == version.0 && n > version) {
            continue;
        }
        let c = &old.contract;
        let (a, b, p) = *version;
        let newest_gone = newest_new.is_none_or(|n| n < *version);
        let diagnostic = if newest_gone {
            let what = match newest_new {
                None => "and no version of it remains".to_owned(),
                Some((x, y, z)) => format!("and its newest remaining version is v{x}.{y}.{z}"),
            };
            Diagnostic::error(
                Code::NodeRemoved,
                &c.source.display,
                c.name.pos,
                "node_name",
                format!("node `{}` v{a}.{b}.{p} was removed {what} [wire]", c.name.value),
            )
            .with_hint("keep the contract until no consumer uses it; retire it in a later major version")
        } else {
            Diagnostic::note(
                Code::NodeRemoved,
                &c.source.display,
                c.name.pos,
                "node_name",
                format!("node `{}` v{a}.{b}.{p} was retired; a newer version remains", c.name.value),
            )
            .with_hint("nothing to do if no consumer still uses this version")
        };
        findings.push(Finding { diagnostic, level: Level::Wire });
    }
}

/// Every rule over one (old, new) pair of contracts of one node, the findings that break at
/// `level` (and the notes), then the version rule over those.
fn compare_pair(old: &NodeModel, new: &NodeModel, level: Level) -> Vec<Finding> {
    let mut sink = Sink::new(old, new);
    schema::compare(&mut sink);
    node::compare(&mut sink);
    let findings = dedup(sink.findings).into_iter().filter(|f| kept(f, level)).collect();
    apply_version_rule(old, new, findings)
}

/// Whether a run at `level` reports `finding`: notes always, breaks at their level.
fn kept(finding: &Finding, level: Level) -> bool {
    finding.diagnostic.severity == Severity::Note || level.includes(finding.level)
}

/// What a breaking finding means for the versions: inside one major version it stays an
/// error; under a new major version it is allowed (a note) and counted in one
/// [`Code::MajorVersionBreak`] note; a contract whose content changed while its version did
/// not gets a [`Code::VersionNotBumped`] warning.
fn apply_version_rule(old: &NodeModel, new: &NodeModel, mut findings: Vec<Finding>) -> Vec<Finding> {
    let (ov, nv) = (old.contract.version.value, new.contract.version.value);
    let c = &new.contract;
    let file = c.source.display.as_str();
    let old_file = old.contract.source.display.as_str();
    let breaking = findings.iter().filter(|f| f.diagnostic.severity != Severity::Note).count();
    if nv.0 > ov.0 {
        for f in &mut findings {
            if f.diagnostic.severity != Severity::Note {
                f.diagnostic.severity = Severity::Note;
                f.diagnostic.message.push_str(&format!(" (allowed: new major version {} → {})", ov.0, nv.0));
            }
        }
        if breaking > 0 {
            findings.push(Finding {
                diagnostic: Diagnostic::note(
                    Code::MajorVersionBreak,
                    file,
                    c.version.pos,
                    "contract_version",
                    format!(
                        "`{}` v{}.{}.{} makes {breaking} breaking change(s) to v{}.{}.{}, allowed by its new major version",
                        c.name.value, nv.0, nv.1, nv.2, ov.0, ov.1, ov.2
                    ),
                )
                .with_related(old_file, old.contract.version.pos, "the previous version")
                .with_hint("keep serving the previous major version until its consumers have moved"),
                level: Level::Wire,
            });
        }
    } else if breaking > 0 {
        let next = format!("v{}_0_0", nv.0 + 1);
        for f in &mut findings {
            let says_major = f.diagnostic.hint.as_deref().is_some_and(|h| h.contains("major version"));
            if f.diagnostic.severity == Severity::Error && !says_major {
                let hint = f.diagnostic.hint.take().unwrap_or_default();
                f.diagnostic.hint = Some(format!(
                    "{hint}; or make the change in a new major version directory `{next}` (contract_version {}.0.0)",
                    nv.0 + 1
                ));
            }
        }
    }
    if ov == nv && content_changed(old, new) {
        findings.push(Finding {
            diagnostic: Diagnostic::warning(
                Code::VersionNotBumped,
                file,
                c.version.pos,
                "contract_version",
                format!(
                    "the contract of `{}` changed but its contract_version is still {}.{}.{}",
                    c.name.value, nv.0, nv.1, nv.2
                ),
            )
            .with_related(old_file, old.contract.version.pos, "the baseline declares the same version")
            .with_hint(if breaking > 0 {
                format!("a breaking change needs a new major version: {}.0.0 in `v{}_0_0`", nv.0 + 1, nv.0 + 1)
            } else {
                format!("bump the minor version ({}.{}.0) for additions, the patch version for fixes", nv.0, nv.1 + 1)
            }),
            level: Level::Wire,
        });
    }
    findings
}

/// Whether the two contracts' documents differ, comments and layout aside.
fn content_changed(old: &NodeModel, new: &NodeModel) -> bool {
    let tree = |c: &crate::validate::Contract| {
        let mut scratch = Vec::new();
        crate::read::parse(&c.source.display, &c.source.text, &mut scratch).map(|n| n.to_json())
    };
    tree(&old.contract) != tree(&new.contract)
}

/// One finding per (code, place, old place): a type reached both from the input and from the
/// output is compared twice; the stricter finding (error before note, wire before source) stays.
fn dedup(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        let key = |f: &Finding| {
            (
                f.diagnostic.code,
                f.diagnostic.file.clone(),
                f.diagnostic.pos,
                f.diagnostic.related.first().map(|r| r.pos),
                f.diagnostic.severity,
                f.level,
            )
        };
        key(a).cmp(&key(b))
    });
    findings.dedup_by(|later, first| {
        later.diagnostic.code == first.diagnostic.code
            && later.diagnostic.file == first.diagnostic.file
            && later.diagnostic.pos == first.diagnostic.pos
            && later.diagnostic.related.first().map(|r| r.pos) == first.diagnostic.related.first().map(|r| r.pos)
    });
    findings
}

fn finish(mut report: Report, findings: Vec<Finding>, level: Level) -> Report {
    report.diagnostics = findings.into_iter().filter(|f| kept(f, level)).map(|f| f.diagnostic).collect();
    diagnostics::sort(&mut report.diagnostics);
    report
}

/// Where the rules of one pair put their findings.
pub(crate) struct Sink<'a> {
    pub old: &'a NodeModel,
    pub new: &'a NodeModel,
    pub findings: Vec<Finding>,
}

impl<'a> Sink<'a> {
    fn new(old: &'a NodeModel, new: &'a NodeModel) -> Self {
        Self { old, new, findings: Vec::new() }
    }

    /// A finding of `code` at `pos` of the new file, `old_pos` of the old file related. The
    /// severity is the rule's ([`rules::severity`]); the message says the level.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        code: Code,
        level: Level,
        pos: Pos,
        path: &str,
        message: String,
        old_pos: Option<(Pos, &str)>,
        hint: &str,
    ) {
        let file = &self.new.contract.source.display;
        let severity = rules::severity(code);
        let message = match severity {
            Severity::Note => message,
            _ => format!("{message} [{}]", level.as_str()),
        };
        let mut d = Diagnostic::error(code, file, pos, path, message).with_hint(hint);
        d.severity = severity;
        if let Some((old_pos, what)) = old_pos {
            d = d.with_related(&self.old.contract.source.display, old_pos, what);
        }
        self.findings.push(Finding { diagnostic: d, level });
    }

    /// Gives the last finding `severity` instead of its rule's (a timeout that grew rather
    /// than shrank).
    pub fn set_last_severity(&mut self, severity: Severity) {
        if let Some(last) = self.findings.last_mut() {
            last.diagnostic.severity = severity;
        }
    }
}

/// The position of the top-level key `key` in `text` (block style: the key at column 1), for
/// findings about a section the model keeps no position for.
pub(crate) fn key_pos(text: &str, key: &str) -> Option<Pos> {
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.strip_prefix(key)?;
        rest.trim_start().starts_with(':').then(|| Pos::new(i as u32 + 1, 1))
    })
}

/// The first non-blank column of line `line` of `text` (1 when the line is blank or absent).
pub(crate) fn line_pos(text: &str, line: u32) -> Pos {
    let col = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|l| l.chars().position(|c| !c.is_whitespace()))
        .map_or(1, |c| c as u32 + 1);
    Pos::new(line.max(1), col)
}
