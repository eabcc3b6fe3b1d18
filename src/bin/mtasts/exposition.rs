//! The Prometheus text exposition of the library's counters ([`mtasts::metrics`]), shared by
//! `mtasts serve --metrics` and `mtasts stats`. The text format itself is written by the
//! `prometheus-client` crate; this module only says what to write.

use std::fmt;

use mtasts::metrics::{Kind, Sample, Value, latency_buckets};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// Whether a series is written: every series, except the never-counted combinations of
/// `mtasts_verdicts` (verdict x reason x mode has over 200, most of them impossible).
pub fn shown(s: &Sample) -> bool {
    s.family.name != "mtasts_verdicts" || s.value.count() > 0
}

/// The non-cumulative `(upper bound, count)` pairs of a histogram, `+Inf` last.
pub fn buckets(counts: &[u64]) -> Vec<(f64, u64)> {
    latency_buckets().iter().copied().chain([f64::INFINITY]).zip(counts.iter().copied()).collect()
}

/// Writes the library's families, from a snapshot of its counters.
pub fn encode_library(samples: &[Sample], encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let mut i = 0;
    while i < samples.len() {
        let family = samples[i].family;
        let end =
            samples[i..].iter().position(|s| s.family.name != family.name).map_or(samples.len(), |n| i + n);
        let metric_type = match family.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
        for s in samples[i..end].iter().filter(|s| shown(s)) {
            let labels: &[(&str, &str)] = &s.labels;
            let series = metric.encode_family(&labels)?;
            match &s.value {
                Value::Counter(n) => ConstCounter::new(*n).encode(series)?,
                Value::Histogram { buckets: counts, sum } => {
                    let mut series = series;
                    let count = counts.iter().sum();
                    series.encode_histogram::<NoLabelSet>(*sum, count, &buckets(counts), None)?;
                }
            }
        }
        i = end;
    }
    Ok(())
}

/// The Prometheus text (format 0.0.4) of everything `collector` writes.
pub fn text(collector: Box<dyn Collector>) -> Result<String, String> {
    let mut registry = Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .map_err(|_| "the metrics could not be encoded".to_owned())?;
    Ok(out)
}
