//! The figures of a run: every round of every contender, their medians, and the ratios the
//! host is held to, as JSON (`target/bench/host.json`) and as a markdown table.

use std::collections::BTreeMap;

use onex_tests::bench::{median, paired_ratios};
use serde_json::json;

use crate::Contender;
use crate::machine::Usage;

/// One round of one contender.
#[derive(Debug, Clone)]
pub struct Round {
    pub round: usize,
    /// Answers over the time from the first to the last one read.
    pub rps: f64,
    /// Answers over the time from the contender's start to the last one read.
    pub wall_rps: f64,
    /// From the contender's start to its first answer (joining the group, first fetch).
    pub first_answer_s: f64,
    /// Paced requests: request → answer, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU over the steady window.
    pub usage: Usage,
    /// Requests answered twice (redelivered).
    pub duplicates: usize,
    pub mean_answer_bytes: f64,
    /// The hosts' counters at shutdown (hosts only).
    pub counters: Option<String>,
    /// Answers checked (one in 50), how many were not the node's right answer, and what was
    /// wrong with the first of those.
    pub checked: usize,
    pub wrong: usize,
    pub first_wrong: Option<String>,
}

impl Round {
    /// CPU time of this process per answer, in µs.
    fn process_us(&self) -> Option<f64> {
        self.usage.process_cores.map(|c| c * 1e6 / self.rps)
    }

    /// CPU time of the broker per answer, in µs.
    fn broker_us(&self) -> Option<f64> {
        self.usage.broker_cores.map(|c| c * 1e6 / self.rps)
    }

    /// The round as one log line.
    pub fn line(&self) -> String {
        let u = &self.usage;
        let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        format!(
            "{:>8.0} req/s steady {:>7.0} from start (first answer after {:.2} s), p50 {:.1} ms p99 {:.1} ms, \
             cores: process {:.2} broker {:.2} postgres {:.2} machine {:.2}/{}, µs/req: process {:.1} broker {:.1}",
            self.rps,
            self.wall_rps,
            self.first_answer_s,
            self.p50_ms,
            self.p99_ms,
            or_nan(u.process_cores),
            or_nan(u.broker_cores),
            or_nan(u.postgres_cores),
            or_nan(u.machine_cores),
            u.cores,
            or_nan(self.process_us()),
            or_nan(self.broker_us()),
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "round": self.round,
            "rps": self.rps,
            "wall_rps": self.wall_rps,
            "first_answer_s": self.first_answer_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "usage": self.usage.json(),
            "process_cpu_us_per_request": self.process_us(),
            "broker_cpu_us_per_request": self.broker_us(),
            "duplicates": self.duplicates,
            "mean_answer_bytes": self.mean_answer_bytes,
            "counters": self.counters,
            "answers_checked": self.checked,
            "answers_wrong": self.wrong,
            "first_wrong_answer": self.first_wrong,
        })
    }
}

/// The medians over a contender's rounds.
struct Medians {
    rps: Option<f64>,
    wall_rps: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    process_cores: Option<f64>,
    broker_cores: Option<f64>,
    postgres_cores: Option<f64>,
    machine_cores: Option<f64>,
    process_us: Option<f64>,
    broker_us: Option<f64>,
    answer_bytes: Option<f64>,
}

impl Medians {
    fn of(rounds: &[Round]) -> Self {
        let of = |f: &dyn Fn(&Round) -> Option<f64>| median(&rounds.iter().filter_map(f).collect::<Vec<_>>());
        Self {
            rps: of(&|r| Some(r.rps)),
            wall_rps: of(&|r| Some(r.wall_rps)),
            p50_ms: of(&|r| Some(r.p50_ms)),
            p99_ms: of(&|r| Some(r.p99_ms)),
            process_cores: of(&|r| r.usage.process_cores),
            broker_cores: of(&|r| r.usage.broker_cores),
            postgres_cores: of(&|r| r.usage.postgres_cores),
            machine_cores: of(&|r| r.usage.machine_cores),
            process_us: of(&Round::process_us),
            broker_us: of(&Round::broker_us),
            answer_bytes: of(&|r| Some(r.mean_answer_bytes)),
        }
    }
}

/// A ratio of rates, round by round, with its target.
struct Ratio {
    what: String,
    per_round: Vec<f64>,
    median: Option<f64>,
    target: Option<f64>,
}

/// The whole run.
pub struct Report {
    settings: String,
    contenders: Vec<(Contender, Vec<Round>)>,
    ratios: Vec<Ratio>,
}

fn rates(rounds: &[Round]) -> Vec<f64> {
    rounds.iter().map(|r| r.rps).collect()
}

impl Report {
    pub fn new(settings: String, order: &[Contender], mut rounds: BTreeMap<Contender, Vec<Round>>) -> Self {
        let mut sorted: Vec<Contender> = order.to_vec();
        sorted.sort_by_key(|c| (c.bound, c.kind != "plain-threaded", c.kind != "plain-async"));
        let contenders: Vec<(Contender, Vec<Round>)> =
            sorted.into_iter().map(|c| (c, rounds.remove(&c).unwrap_or_default())).collect();
        let mut ratios = Vec::new();
        let mut bounds: Vec<usize> = contenders.iter().map(|(c, _)| c.bound).collect();
        bounds.dedup();
        for bound in bounds {
            let find =
                |kind: &str| contenders.iter().find(|(c, _)| c.kind == kind && c.bound == bound).map(|(_, r)| rates(r));
            // "The plain loop" of a round is the faster of the single loops that ran.
            let plain: Vec<Vec<f64>> = ["plain-threaded", "plain-async"].into_iter().filter_map(find).collect();
            let plain: Vec<&[f64]> = plain.iter().map(Vec::as_slice).collect();
            let mut ratio = |what: String, contender: Option<Vec<f64>>, baselines: &[&[f64]], target| {
                if let Some(contender) = contender {
                    let per_round = paired_ratios(&contender, baselines);
                    if !per_round.is_empty() {
                        ratios.push(Ratio { what, median: median(&per_round), per_round, target });
                    }
                }
            };
            ratio(format!("host / plain loop, in flight ≤ {bound}"), find("host"), &plain, Some(0.8));
            let one = find("host");
            let one: Vec<&[f64]> = one.iter().map(Vec::as_slice).collect();
            ratio(format!("two hosts / one host, in flight ≤ {bound}"), find("two-hosts"), &one, Some(1.6));
            ratio(format!("host-postgres / plain loop, in flight ≤ {bound}"), find("host-postgres"), &plain, None);
            let one_plain = find("plain-threaded");
            let one_plain: Vec<&[f64]> = one_plain.iter().map(Vec::as_slice).collect();
            ratio(format!("two plain loops / one, in flight ≤ {bound}"), find("two-plain"), &one_plain, None);
        }
        Self { settings, contenders, ratios }
    }

    pub fn json(&self) -> serde_json::Value {
        let contenders: Vec<serde_json::Value> = self
            .contenders
            .iter()
            .map(|(c, rounds)| {
                let m = Medians::of(rounds);
                json!({
                    "name": c.name(),
                    "kind": c.kind,
                    "max_in_flight": c.bound,
                    "median": {
                        "rps": m.rps, "wall_rps": m.wall_rps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                        "process_cores": m.process_cores, "broker_cores": m.broker_cores,
                        "postgres_cores": m.postgres_cores, "machine_cores": m.machine_cores,
                        "process_cpu_us_per_request": m.process_us, "broker_cpu_us_per_request": m.broker_us,
                        "mean_answer_bytes": m.answer_bytes,
                    },
                    "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let ratios: Vec<serde_json::Value> = self
            .ratios
            .iter()
            .map(|r| {
                let met = r.target.zip(r.median).map(|(t, m)| m >= t);
                json!({"what": r.what, "per_round": r.per_round, "median": r.median, "target": r.target, "met": met})
            })
            .collect();
        json!({"settings": self.settings, "contenders": contenders, "ratios": ratios})
    }

    pub fn print(&self) {
        println!("{}\n", self.settings);
        println!(
            "| contender | req/s steady (median) | rounds | req/s from start | p50 ms | p99 ms | process cores | broker cores | postgres cores | machine cores | process µs/req | broker µs/req | answer bytes |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let cell = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        for (c, rounds) in &self.contenders {
            let m = Medians::of(rounds);
            let each: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.rps)).collect();
            let (checked, wrong) = rounds.iter().fold((0, 0), |(c, w), r| (c + r.checked, w + r.wrong));
            let wrong =
                if wrong > 0 { format!(" ({wrong} of {checked} checked answers wrong)") } else { String::new() };
            println!(
                "| {} | {}{wrong} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.name(),
                cell(m.rps, 0),
                each.join(", "),
                cell(m.wall_rps, 0),
                cell(m.p50_ms, 1),
                cell(m.p99_ms, 1),
                cell(m.process_cores, 2),
                cell(m.broker_cores, 2),
                cell(m.postgres_cores, 2),
                cell(m.machine_cores, 2),
                cell(m.process_us, 1),
                cell(m.broker_us, 1),
                cell(m.answer_bytes, 0),
            );
        }
        println!();
        for (c, rounds) in &self.contenders {
            if let Some(why) = rounds.iter().find_map(|r| r.first_wrong.as_deref()) {
                println!("{}: wrong answers, the first: {why}", c.name());
            }
        }
        for r in &self.ratios {
            let each: Vec<String> = r.per_round.iter().map(|x| format!("{x:.2}")).collect();
            let verdict = match r.target.zip(r.median) {
                Some((t, m)) if m >= t => format!("target ≥ {t:.1}: met"),
                Some((t, _)) => format!("target ≥ {t:.1}: NOT met"),
                None => "no target".to_owned(),
            };
            println!("{}: {} (per round {}; {verdict})", r.what, cell(r.median, 2), each.join(", "));
        }
    }
}
