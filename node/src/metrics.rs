//! Counters and histograms for `/metrics` (Prometheus text format), with
//! the usual names and units. Updated where the work happens (net, fetch,
//! API); rendered with the gauges the API reads at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, c) in BUCKETS.iter().zip(&self.counts) {
            if s <= *bound {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", c.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What a node counts for operators.
#[derive(Default)]
pub struct Metrics {
    /// (topic, result) -> messages.
    gossip: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub sync_bytes_received: AtomicU64,
    pub sync_bytes_sent: AtomicU64,
    pub blob_bytes_served: AtomicU64,
    /// Providers caught serving corrupted bytes.
    pub providers_penalized: AtomicU64,
    /// result -> publishes.
    publishes: Mutex<BTreeMap<&'static str, u64>>,
    pub fetch_seconds: Histogram,
    pub search_seconds: Histogram,
}

/// A gauge read at scrape time: name, help, value.
pub struct Gauge<'a>(pub &'a str, pub &'a str, pub u64);

impl Metrics {
    /// One gossiped message on `topic` (its last path segment is kept), and
    /// what became of it: accept, reject, ignore or dropped.
    pub fn gossip(&self, topic: &str, result: &'static str) {
        let short = topic.rsplit('/').next().unwrap_or(topic).to_string();
        if let Ok(mut m) = self.gossip.lock() {
            *m.entry((short, result)).or_default() += 1;
        }
    }

    /// One publish and its result: ok or an error code.
    pub fn publish(&self, result: &'static str) {
        if let Ok(mut m) = self.publishes.lock() {
            *m.entry(result).or_default() += 1;
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition of every metric, gauges first.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        for Gauge(name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP packfed_gossip_messages_total Gossiped messages by topic and verdict.\n# TYPE packfed_gossip_messages_total counter"
        );
        for ((topic, result), n) in self.gossip.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(
                out,
                "packfed_gossip_messages_total{{topic=\"{topic}\",result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP packfed_sync_bytes_total Registry sync message bytes.\n# TYPE packfed_sync_bytes_total counter\npackfed_sync_bytes_total{{direction=\"in\"}} {}\npackfed_sync_bytes_total{{direction=\"out\"}} {}",
            self.sync_bytes_received.load(Ordering::Relaxed),
            self.sync_bytes_sent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP packfed_blob_bytes_served_total Pack bytes served to clients and peers.\n# TYPE packfed_blob_bytes_served_total counter\npackfed_blob_bytes_served_total {}",
            self.blob_bytes_served.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP packfed_blob_providers_penalized_total Providers caught serving corrupted bytes.\n# TYPE packfed_blob_providers_penalized_total counter\npackfed_blob_providers_penalized_total {}",
            self.providers_penalized.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP packfed_publish_total Publishes by result.\n# TYPE packfed_publish_total counter"
        );
        for (result, n) in self.publishes.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(out, "packfed_publish_total{{result=\"{result}\"}} {n}");
        }
        self.fetch_seconds
            .render("packfed_fetch_seconds", "Time to fetch a pack from peers.", &mut out);
        self.search_seconds
            .render("packfed_search_seconds", "Time to answer a search.", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_text_with_labels_and_buckets() {
        let m = Metrics::default();
        m.gossip("packfed/abc/records", "accept");
        m.gossip("packfed/abc/records", "accept");
        m.publish("ok");
        m.search_seconds.observe(Duration::from_millis(3));
        let text = m.render(&[Gauge("packfed_releases", "Releases held.", 7)]);
        assert!(text.contains("packfed_releases 7\n"));
        assert!(text.contains("packfed_gossip_messages_total{topic=\"records\",result=\"accept\"} 2\n"));
        assert!(text.contains("packfed_publish_total{result=\"ok\"} 1\n"));
        assert!(text.contains("packfed_search_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("packfed_search_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("packfed_search_seconds_count 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
