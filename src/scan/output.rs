//! How a scan is shown: a table for people, one JSON document, JSON lines as results come, and
//! nmap's greppable lines (`-oG`), plus the one-line summary.
//!
//! Which ports are listed is the same everywhere: the open ones, and every state when the caller
//! asks (`-v`); the others are counted.

use std::fmt::Write as _;

use serde_json::json;

use super::engine::{Counts, PortResult, ScanReport, State};

/// The closing line: hosts, ports, the count of each state, the time taken.
pub fn summary(report: &ScanReport) -> String {
    let c = &report.counts;
    let hosts = report.hosts.len();
    format!(
        "{} {}, {} {} each: {} open, {} closed, {} filtered in {:.2} s{}",
        hosts,
        if hosts == 1 { "host" } else { "hosts" },
        report.ports,
        if report.ports == 1 { "port" } else { "ports" },
        c.open,
        c.closed,
        c.filtered,
        report.elapsed_secs,
        if report.interrupted {
            " (interrupted: what was found so far)"
        } else {
            ""
        }
    )
}

/// Counts per state of each host's kept and unkept results.
fn host_counts(report: &ScanReport, host: usize) -> Counts {
    report.host_counts.get(host).copied().unwrap_or_default()
}

fn host_label(report: &ScanReport, host: usize) -> String {
    let h = &report.hosts[host];
    match &h.name {
        Some(name) => format!("{name} ({})", h.addr),
        None => h.addr.to_string(),
    }
}

/// Results of one host, in port order (the report keeps them sorted by host then port).
fn of_host(report: &ScanReport, host: usize) -> &[PortResult] {
    let start = report.results.partition_point(|r| r.host_index < host);
    let end = report.results.partition_point(|r| r.host_index <= host);
    &report.results[start..end]
}

/// The table: per host, its listed ports (port, state, service, banner) and what was not shown.
pub fn table(report: &ScanReport, all_states: bool) -> String {
    let mut out = String::new();
    for host in 0..report.hosts.len() {
        let rows: Vec<&PortResult> = of_host(report, host)
            .iter()
            .filter(|r| all_states || r.state == State::Open)
            .collect();
        let c = host_counts(report, host);
        let _ = writeln!(out, "{}", host_label(report, host));
        if !rows.is_empty() {
            let header = format!(
                "  {:<11} {:<9} {:<15} {}",
                "PORT",
                "STATE",
                "SERVICE",
                if all_states { "REASON" } else { "" }
            );
            let _ = writeln!(out, "{}", header.trim_end());
            for r in rows {
                let port = format!("{}/tcp", r.port);
                let mut line = format!(
                    "  {:<11} {:<9} {:<15}",
                    port,
                    r.state.as_str(),
                    r.service.unwrap_or("-")
                );
                if all_states {
                    let _ = write!(line, " {}", r.reason.as_str());
                }
                if let Some(b) = &r.banner {
                    let _ = write!(line, " {b}");
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        if !all_states {
            let mut hidden = Vec::new();
            if c.closed > 0 {
                hidden.push(format!("{} closed", c.closed));
            }
            if c.filtered > 0 {
                hidden.push(format!("{} filtered", c.filtered));
            }
            if c.open == 0 {
                let _ = writeln!(out, "  no open port ({})", hidden.join(", "));
            } else if !hidden.is_empty() {
                let _ = writeln!(out, "  not shown: {}", hidden.join(", "));
            }
        }
    }
    out
}

/// One JSON document: the scan's limits and counts, the hosts, names that did not resolve, and
/// the listed results.
pub fn json(report: &ScanReport, all_states: bool) -> serde_json::Value {
    let results: Vec<&PortResult> = report
        .results
        .iter()
        .filter(|r| all_states || r.state == State::Open)
        .collect();
    json!({
        "hosts": report.hosts,
        "unresolved": report.unresolved,
        "ports_per_host": report.ports,
        "results": results,
        "counts": report.counts,
        "elapsed_secs": report.elapsed_secs,
        "interrupted": report.interrupted,
        "self_connects": report.self_connects,
        "out_of_resources": report.out_of_resources,
        "drops": report.drops,
        "peak_window": report.peak_window,
        "limits": report.limits,
    })
}

/// One JSON line for a result (`"type": "port"`).
pub fn jsonl_result(result: &PortResult) -> String {
    let mut value = serde_json::to_value(result).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("type".into(), "port".into());
    }
    value.to_string()
}

/// The JSON line that ends a JSON-lines scan (`"type": "summary"`).
pub fn jsonl_summary(report: &ScanReport) -> String {
    let mut value = json(report, false);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("results");
        obj.insert("type".into(), "summary".into());
    }
    value.to_string()
}

/// nmap's greppable format: one `Host:` line per host with its listed ports as
/// `PORT/STATE/tcp//SERVICE///` and the most common unlisted state; comment lines around it.
pub fn greppable(report: &ScanReport, all_states: bool, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# sockit scan as: {command}");
    for host in 0..report.hosts.len() {
        let h = &report.hosts[host];
        let ports: Vec<String> = of_host(report, host)
            .iter()
            .filter(|r| all_states || r.state == State::Open)
            .map(|r| {
                format!(
                    "{}/{}/tcp//{}///",
                    r.port,
                    r.state.as_str(),
                    r.service.unwrap_or("")
                )
            })
            .collect();
        let c = host_counts(report, host);
        let mut line = format!(
            "Host: {} ({})\tPorts: {}",
            h.addr,
            h.name.as_deref().unwrap_or(""),
            ports.join(", ")
        );
        if !all_states {
            let (state, n) = if c.closed >= c.filtered {
                ("closed", c.closed)
            } else {
                ("filtered", c.filtered)
            };
            if n > 0 {
                let _ = write!(line, "\tIgnored State: {state} ({n})");
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "# sockit done: {}", summary(report));
    out
}
