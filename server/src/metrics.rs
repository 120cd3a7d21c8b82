//! HTTP-level metrics for `/metrics`, rendered in the Prometheus text format 0.0.4.
//!
//! Kept dependency-free (atomics plus one small map) because the set is tiny and fixed. Route
//! labels are `&'static str` chosen by the router from a closed set (known operation names, or
//! "unknown"), so a client cannot grow the label space by inventing paths or targets.
//! Byte counters are bumped by [`crate::http::CountingBody`] as body frames flow, so a PutMedia
//! upload or a GetMedia download shows up while it is still running, not when it ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters and gauges of the HTTP layer.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Responses by (route, status). A std mutex: the critical section is one map update.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Request body bytes received.
    pub(crate) bytes_in: AtomicU64,
    /// Response body bytes sent.
    pub(crate) bytes_out: AtomicU64,
    /// Connections currently open.
    open_connections: AtomicI64,
    /// Connections accepted since start.
    connections_total: AtomicU64,
}

impl HttpMetrics {
    /// Counts one response with its route label and status.
    pub fn record_request(&self, route: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route, status)).or_insert(0) += 1;
    }

    /// The count of responses recorded for (route, status).
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((r, s), _)| *r == route && *s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Marks a connection open until the returned guard drops.
    pub(crate) fn connection_opened(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Appends the HTTP metrics in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP timeshard_http_requests_total HTTP responses by route and status."
        );
        let _ = writeln!(out, "# TYPE timeshard_http_requests_total counter");
        {
            let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            for ((route, status), n) in map.iter() {
                // Route labels come from a fixed set of identifiers; nothing to escape.
                let _ = writeln!(
                    out,
                    "timeshard_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let scalars: [(&str, &str, &str, String); 4] = [
            (
                "timeshard_http_request_bytes_total",
                "Request body bytes received.",
                "counter",
                self.bytes_in().to_string(),
            ),
            (
                "timeshard_http_response_bytes_total",
                "Response body bytes sent.",
                "counter",
                self.bytes_out().to_string(),
            ),
            (
                "timeshard_http_open_connections",
                "Client connections currently open.",
                "gauge",
                self.open_connections().to_string(),
            ),
            (
                "timeshard_http_connections_total",
                "Client connections accepted.",
                "counter",
                self.connections_total.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, help, kind, value) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// Keeps the open-connections gauge up while a connection is served.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(std::sync::Arc<HttpMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_counters_with_labels() {
        let m = Arc::new(HttpMetrics::default());
        m.record_request("health", 200);
        m.record_request("health", 200);
        m.record_request("kinesis:unknown", 400);
        m.bytes_in.fetch_add(10, Ordering::Relaxed);
        m.bytes_out.fetch_add(7, Ordering::Relaxed);
        let guard = m.connection_opened();
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(
            out.contains("timeshard_http_requests_total{route=\"health\",status=\"200\"} 2\n"),
            "{out}"
        );
        assert!(out.contains(
            "timeshard_http_requests_total{route=\"kinesis:unknown\",status=\"400\"} 1\n"
        ));
        assert!(out.contains("timeshard_http_request_bytes_total 10\n"));
        assert!(out.contains("timeshard_http_response_bytes_total 7\n"));
        assert!(out.contains("timeshard_http_open_connections 1\n"));
        drop(guard);
        assert_eq!(m.open_connections(), 0);
        assert_eq!(m.requests("health", 200), 2);
        // Each metric family has exactly one TYPE line.
        assert_eq!(
            out.matches("# TYPE timeshard_http_requests_total").count(),
            1
        );
    }
}
