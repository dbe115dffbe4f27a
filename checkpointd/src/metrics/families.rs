//! A telemetry reply's numbers as metric families: names from the JSON
//! keys, a `worker` or `index` label where the reply is per worker.

use serde_json::Value;
use std::collections::BTreeMap;

/// A sample's labels, (name, value) in order.
pub type Labels = Vec<(String, String)>;
/// Metric name -> its samples.
pub type Families = BTreeMap<String, Vec<(Labels, f64)>>;

/// Turns every number (and boolean) of a telemetry reply into samples.
/// Object keys extend the name; an array of objects, or an object whose keys
/// are all numbers, is per worker: the element's `worker` field (else its
/// index or key) becomes the `worker` label; other arrays label by `index`.
/// Strings are skipped.
pub fn flatten(name: &str, v: &Value, labels: &Labels, out: &mut Families) {
    match v {
        Value::Number(n) => push_sample(out, name, labels, n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => push_sample(out, name, labels, f64::from(u8::from(*b))),
        Value::Object(map) => {
            // The dataplane keys per-worker dicts "worker0", "worker1", ...
            // (DPDK 22.11 telemetry has no arrays of dicts); plain "0" too.
            let worker_of = |k: &str| k.strip_prefix("worker").unwrap_or(k).parse::<u32>().ok();
            let keyed_by_worker = !map.is_empty()
                && map.keys().all(|k| worker_of(k).is_some())
                && !has_label(labels, "worker");
            for (k, item) in map {
                if keyed_by_worker {
                    let w = worker_of(k).unwrap_or_default().to_string();
                    flatten(name, item, &with_label(labels, "worker", &w), out);
                } else if k == "worker" && has_label(labels, "worker") {
                    // Already a label.
                } else {
                    flatten(&format!("{name}_{}", sanitize(k)), item, labels, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let l = if item.is_object() && !has_label(labels, "worker") {
                    let w = item.get("worker").map_or_else(
                        || i.to_string(),
                        |w| w.to_string().trim_matches('"').to_string(),
                    );
                    with_label(labels, "worker", &w)
                } else {
                    with_label(labels, "index", &i.to_string())
                };
                flatten(name, item, &l, out);
            }
        }
        Value::String(_) | Value::Null => {}
    }
}

fn has_label(labels: &Labels, key: &str) -> bool {
    labels.iter().any(|(k, _)| k == key)
}

fn with_label(labels: &Labels, key: &str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key.to_string(), value.to_string()));
    l
}

fn push_sample(out: &mut Families, name: &str, labels: &Labels, v: f64) {
    let samples = out.entry(name.to_string()).or_default();
    // A duplicate series would make the exposition invalid: keep the first.
    if !samples.iter().any(|(l, _)| l == labels) {
        samples.push((labels.clone(), v));
    }
}

/// A metric name part: `[a-z0-9_]`, anything else becomes `_`.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect()
}
