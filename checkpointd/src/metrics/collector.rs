//! OpenMetrics families: checkpointd's own from a snapshot of the rings
//! and store, and the dataplane's, flattened from its telemetry replies.

use super::dataplane::Dataplane;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// What one scrape read, encoded afterwards.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) rings: Vec<(u32, shm_layout::RingStatus)>,
    /// None: the rings were never beaten (cannot happen once running).
    pub(super) heartbeat_age: Option<f64>,
    pub(super) conns: u64,
    pub(super) ftp: u64,
    pub(super) capacity: u32,
    pub(super) ftp_capacity: u32,
    pub(super) bytes_per_conn: u64,
    pub(super) full_drops: u64,
    pub(super) ftp_full_drops: u64,
    pub(super) stale: u64,
    pub(super) stale_deletes: u64,
    pub(super) swept: u64,
    pub(super) rejected: u64,
    pub(super) uptime: f64,
    /// None: no telemetry socket configured.
    pub(super) dataplane: Option<Dataplane>,
    /// The remote copy's counters, flattened; None: it is off.
    pub(super) remote: Option<super::families::Families>,
    /// What checkpointd holds of protected connections, flattened.
    pub(super) protect: super::families::Families,
}

fn worker_label(w: u32) -> [(&'static str, String); 1] {
    [("worker", w.to_string())]
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type RingField = fn(&shm_layout::RingStatus) -> u64;
        let ring_gauges: [(&str, &str, RingField); 3] = [
            (
                "lazarus_ring_head",
                "Next position the dataplane worker will publish in its delta ring",
                |s| s.head,
            ),
            ("lazarus_ring_tail", "Next position checkpointd will read in the delta ring", |s| {
                s.tail
            }),
            ("lazarus_ring_lag", "Deltas published but not yet drained (head - tail)", |s| s.lag()),
        ];
        for (name, help, f) in ring_gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (w, s) in &self.rings {
                let labels = worker_label(*w);
                ConstGauge::new(f(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let ring_counters: [(&str, &str, RingField); 3] = [
            (
                "lazarus_ring_applied",
                "Deltas checkpointd drained from the ring and applied to the store",
                |s| s.applied,
            ),
            (
                "lazarus_ring_torn",
                "Ring records skipped because their checksum or sequence did not match",
                |s| s.torn,
            ),
            (
                "lazarus_ring_resync_requests",
                "Full resyncs checkpointd asked this worker for (resync_epoch)",
                |s| s.resync_epoch,
            ),
        ];
        for (name, help, f) in ring_counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (w, s) in &self.rings {
                let labels = worker_label(*w);
                ConstCounter::new(f(s)).encode(m.encode_family(&labels)?)?;
            }
        }

        let gauges: [(&str, &str, u64); 5] = [
            ("lazarus_store_connections", "Connections held in the store", self.conns),
            (
                "lazarus_store_ftp_portions",
                "FTP control-channel portions held in the store",
                self.ftp,
            ),
            ("lazarus_store_capacity", "Connections the store can hold", u64::from(self.capacity)),
            (
                "lazarus_store_ftp_capacity",
                "FTP portions the store can hold",
                u64::from(self.ftp_capacity),
            ),
            (
                "lazarus_store_bytes_per_connection",
                "Store bytes per connection record",
                self.bytes_per_conn,
            ),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "lazarus_store_full_drops",
                "New connections not stored because the store was full",
                self.full_drops,
            ),
            (
                "lazarus_store_ftp_full_drops",
                "FTP portions not stored because the FTP pool was full",
                self.ftp_full_drops,
            ),
            (
                "lazarus_store_stale",
                "Deltas ignored because the store already held a newer version",
                self.stale,
            ),
            (
                "lazarus_store_stale_deletes",
                "Deletes ignored because the record was a newer connection's with the same id",
                self.stale_deletes,
            ),
            (
                "lazarus_store_swept",
                "Records dropped by a sweep: connections whose deletes the dataplane lost",
                self.swept,
            ),
            (
                "lazarus_store_rejected",
                "Deltas refused: unknown module or kind, oversized portion",
                self.rejected,
            ),
        ];
        for (name, help, v) in counters {
            ConstCounter::new(v).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        ConstGauge::new(self.uptime).encode(enc.encode_descriptor(
            "lazarus_checkpointd_uptime_seconds",
            "Seconds since checkpointd started",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(age) = self.heartbeat_age {
            ConstGauge::new(age).encode(enc.encode_descriptor(
                "lazarus_checkpointd_heartbeat_age_seconds",
                "Seconds since the drain loop last beat the heartbeat the dataplane checks at start",
                None,
                MetricType::Gauge,
            )?)?;
        }

        for (name, samples) in self.remote.iter().flatten() {
            let help = "Remote copy counter (see docs/OPERATING.md)";
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for (labels, v) in samples {
                ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        for (name, samples) in &self.protect {
            let help =
                "Protected connections' records and logs checkpointd holds (see docs/PROTECT.md)";
            // Unlabelled: one sample a family.
            if let Some((_, v)) = samples.first() {
                ConstGauge::new(*v).encode(enc.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        let Some(dp) = &self.dataplane else { return Ok(()) };
        ConstGauge::new(i64::from(dp.up)).encode(enc.encode_descriptor(
            "lazarus_dataplane_up",
            "1 when the dataplane answered /lazarus/workers on its telemetry socket at this scrape",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(dp.scrape_seconds).encode(enc.encode_descriptor(
            "lazarus_dataplane_scrape_seconds",
            "Time the telemetry exchange with the dataplane took at this scrape",
            None,
            MetricType::Gauge,
        )?)?;
        for (name, samples) in &dp.families {
            let help = "Dataplane counter from its DPDK telemetry reply (see docs/OPERATING.md)";
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for (labels, v) in samples {
                ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::families::{flatten, Families, Labels};
    use super::*;
    use prometheus_client::registry::Registry;
    use serde_json::json;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn flat(v: Value) -> Families {
        let mut out = BTreeMap::new();
        flatten("lazarus_dataplane", &v, &Vec::new(), &mut out);
        out
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn per_worker_arrays_and_maps_become_worker_labels() {
        let out = flat(json!({
            "workers": [{"worker": 0, "lcore": 1, "rx": 10, "name": "w0"}, {"worker": 1, "lcore": 2, "rx": 20}],
            "restore": {"ms": 12.5, "ok": true},
        }));
        assert_eq!(
            out["lazarus_dataplane_workers_rx"],
            vec![(l(&[("worker", "0")]), 10.0), (l(&[("worker", "1")]), 20.0)]
        );
        assert_eq!(out["lazarus_dataplane_workers_lcore"][1], (l(&[("worker", "1")]), 2.0));
        assert!(!out.contains_key("lazarus_dataplane_workers_worker"));
        assert!(!out.contains_key("lazarus_dataplane_workers_name"));
        assert_eq!(out["lazarus_dataplane_restore_ms"], vec![(vec![], 12.5)]);
        assert_eq!(out["lazarus_dataplane_restore_ok"], vec![(vec![], 1.0)]);

        let out = flat(json!({"0": {"drop.table_full": 3}, "1": {"drop.table_full": 4}}));
        assert_eq!(
            out["lazarus_dataplane_drop_table_full"],
            vec![(l(&[("worker", "0")]), 3.0), (l(&[("worker", "1")]), 4.0)]
        );
        let out = flat(json!({"rx": [1, 2]}));
        assert_eq!(out["lazarus_dataplane_rx"][1], (l(&[("index", "1")]), 2.0));
    }

    #[test]
    fn snapshot_encodes_as_openmetrics() {
        let mut families = BTreeMap::new();
        flatten("lazarus_dataplane", &json!([{"worker": 0, "rx": 5}]), &Vec::new(), &mut families);
        let snap = Snapshot {
            rings: vec![(
                0,
                shm_layout::RingStatus { head: 10, tail: 7, resync_epoch: 1, torn: 0, applied: 7 },
            )],
            heartbeat_age: Some(0.25),
            conns: 3,
            ftp: 1,
            capacity: 100,
            ftp_capacity: 16,
            bytes_per_conn: 192,
            full_drops: 0,
            ftp_full_drops: 0,
            stale: 2,
            remote: None,
            protect: {
                let mut p = BTreeMap::new();
                flatten(
                    "lazarus_protect",
                    &json!({"conns": 4, "log_bytes": 120}),
                    &Vec::new(),
                    &mut p,
                );
                p
            },
            stale_deletes: 0,
            swept: 0,
            rejected: 0,
            uptime: 1.5,
            dataplane: Some(Dataplane { up: true, scrape_seconds: 0.001, families }),
        };
        let mut r = Registry::default();
        r.register_collector(Box::new(snap));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            "lazarus_ring_lag{worker=\"0\"} 3\n",
            "lazarus_ring_applied_total{worker=\"0\"} 7\n",
            "lazarus_ring_resync_requests_total{worker=\"0\"} 1\n",
            "lazarus_store_connections 3\n",
            "lazarus_checkpointd_heartbeat_age_seconds 0.25\n",
            "lazarus_dataplane_up 1\n",
            "lazarus_dataplane_rx{worker=\"0\"} 5.0\n",
            "lazarus_protect_conns 4.0\n",
            "lazarus_protect_log_bytes 120.0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
