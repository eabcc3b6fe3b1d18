//! `mtasts stats`: the engine's counters summed over every process that used the store.
//!
//! ```text
//! mtasts stats [--config FILE] [--cache PATH] [--json]
//! ```
//!
//! Each engine (an Exim delivery process, `mtasts check`, `mtasts serve`, ...) adds what it
//! counted to the store's `stats` table every few seconds and when it ends (src/metrics.rs).
//! This prints the sums: as Prometheus text by default (the families of `mtasts serve
//! --metrics` that the library keeps, ready for node_exporter's textfile collector), or as one
//! JSON object with `--json` (README "Metrics"). Exit status 0, or 2 when the store cannot be
//! read (a `memory` store has nothing to sum).

use std::process::ExitCode;

use mtasts::metrics::{Metrics, Sample, Value};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::{Map, json};

use crate::exposition;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
    /// One JSON object instead of Prometheus text.
    #[arg(long)]
    json: bool,
}

/// The summed counters, for the Prometheus encoder.
#[derive(Debug)]
struct Summed(Vec<Sample>);

impl Collector for Summed {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        exposition::encode_library(&self.0, &mut encoder)
    }
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (config, _) = args.store.open_store()?;
    let stores = config.open_store().map_err(|e| e.to_string())?;
    let Some(stores) = stores else {
        return Err("[cache] path is \"memory\": there is no store to sum".into());
    };
    let location = stores.policies.location();
    let Some(counts) = stores.counts else {
        return Err(format!("{location}: this store keeps no counters"));
    };
    let rows = counts.stats().map_err(|e| e.to_string())?;
    let sums = Metrics::default();
    let unknown = sums.add_stored(rows.iter().map(|(k, v)| (k.as_str(), *v)));
    for key in unknown {
        eprintln!("mtasts stats: warning: counter {key} is unknown to this version; left out");
    }
    let samples = sums.samples();
    if args.json {
        println!("{}", to_json(&location, &samples));
    } else {
        print!("{}", exposition::text(Box::new(Summed(samples)))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `{"store": ..., "counters": [...], "histograms": [...]}` (README "Metrics").
fn to_json(location: &str, samples: &[Sample]) -> serde_json::Value {
    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    for s in samples.iter().filter(|s| exposition::shown(s)) {
        let labels: Map<String, serde_json::Value> =
            s.labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        match &s.value {
            Value::Counter(n) => {
                counters
                    .push(json!({"name": format!("{}_total", s.family.name), "labels": labels, "value": n}));
            }
            Value::Histogram { buckets, sum } => {
                let mut cumulative = 0u64;
                let buckets: Vec<serde_json::Value> = exposition::buckets(buckets)
                    .into_iter()
                    .map(|(le, n)| {
                        cumulative += n;
                        let le = if le.is_infinite() { "+Inf".to_owned() } else { le.to_string() };
                        json!({"le": le, "count": cumulative})
                    })
                    .collect();
                histograms.push(json!({
                    "name": s.family.name,
                    "labels": labels,
                    "count": cumulative,
                    "sum": sum,
                    "buckets": buckets,
                }));
            }
        }
    }
    json!({"store": location, "counters": counters, "histograms": histograms})
}
