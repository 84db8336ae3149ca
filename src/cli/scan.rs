//! `sockit scan` flags: targets and ports into a validated scan, the output formats, Ctrl-C.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sockit::scan::{
    self, output, BannerConfig, Event, ScanConfig, ScanError, State, Target, Timeouts,
};
use sockit::work::Progress;
use tokio_util::sync::CancellationToken;

use super::common::{parse_count, parse_duration, parse_rate};
use super::{log, Usage};

pub const EXAMPLES: &str = "Examples:
  sockit scan 127.0.0.1                     the top 1000 ports (nmap's frequency order)
  sockit scan localhost ::1 -p 22,80,8000-8100
  sockit scan 127.0.0.0/29 -p- --jsonl      every port of 8 addresses, a JSON line per result
  sockit scan -iL hosts.txt --top-ports 100 -oG scan.gnmap
  sockit scan 127.0.0.1 -p 1-1024 --banner -v   what open ports say; every state listed
States are nmap's: open (handshake done), closed (refused), filtered (no answer after the retries,
or an ICMP unreachable). Scan only machines you are allowed to scan.";

/// Scans with more probes than this show a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 2000;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Hosts to scan: names, IPv4/IPv6 addresses, CIDR ranges (127.0.0.0/29), address ranges
    /// (127.0.0.1-9)
    #[arg(value_name = "TARGET", required_unless_present = "input_list")]
    pub targets: Vec<String>,

    /// Read more targets from FILE (`-` for stdin): whitespace-separated, `#` starts a comment
    /// (nmap's -iL)
    #[arg(long = "input-list", alias = "iL", value_name = "FILE")]
    pub input_list: Option<PathBuf>,

    /// Ports: 22,80,8000-8100; `-p-` for all 65535; service names (http,ssh) [default: the top 1000]
    #[arg(short = 'p', long, value_name = "PORTS", allow_hyphen_values = true, conflicts_with_all = ["top_ports", "fast"])]
    pub ports: Option<String>,

    /// The N ports most often open (nmap's frequency order, 1 to 1000)
    #[arg(long, value_name = "N", conflicts_with = "fast")]
    pub top_ports: Option<usize>,

    /// The top 100 ports (nmap's -F)
    #[arg(short = 'F', long)]
    pub fast: bool,

    /// Read what each open port says first and show it (control characters escaped)
    #[arg(long)]
    pub banner: bool,

    /// How long to wait for a banner
    #[arg(long, value_name = "TIME", default_value = "2s", value_parser = parse_duration)]
    pub banner_wait: Duration,

    /// Read at most this many bytes of a banner
    #[arg(long, value_name = "N", default_value = "256", value_parser = parse_count)]
    pub banner_bytes: usize,

    /// Print one JSON document at the end
    #[arg(long, conflicts_with_all = ["jsonl", "greppable"])]
    pub json: bool,

    /// Print a JSON line per result as it is found, and a summary line at the end
    #[arg(long, conflicts_with = "greppable")]
    pub jsonl: bool,

    /// Write nmap's greppable format to FILE (`-` for stdout; nmap's -oG)
    #[arg(long = "greppable", alias = "oG", value_name = "FILE")]
    pub greppable: Option<PathBuf>,

    /// At most N connection attempts per second, retries included (0 = no cap)
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_rate)]
    pub rate: f64,

    /// At most N connections in flight at once (also bounded by the open-file limit)
    #[arg(long, value_name = "N", default_value = "5000", value_parser = parse_count)]
    pub max_concurrency: usize,

    /// A fixed per-connection timeout instead of one from measured round trips
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The measured timeout's floor
    #[arg(long, value_name = "TIME", default_value = "100ms", value_parser = parse_duration)]
    pub min_timeout: Duration,

    /// The measured timeout's ceiling (and the timeout before anything is measured: the smaller of
    /// this and 1s)
    #[arg(long, value_name = "TIME", default_value = "3s", value_parser = parse_duration)]
    pub max_timeout: Duration,

    /// Tries after the first for a port that does not answer
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,

    /// Most addresses a scan takes without --confirm-large
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub max_hosts: u64,

    /// Scan more than --max-hosts addresses (up to 16,777,216)
    #[arg(long)]
    pub confirm_large: bool,

    /// No progress bar, even on a terminal
    #[arg(long)]
    pub no_progress: bool,

    /// Lanes starting connects [default: one per CPU]
    #[arg(long, hide = true, value_name = "N", value_parser = parse_count)]
    pub lanes: Option<usize>,

    /// Let concurrency go past the open-file limit (to test the scanner at EMFILE)
    #[arg(long, hide = true)]
    pub ignore_fd_limit: bool,
}

/// nmap's two-letter options (`-iL`, `-oG`) are not clap shorts: they are spelled as the long
/// options they stand for before parsing, and only after `scan`.
pub fn nmap_spellings(args: Vec<OsString>) -> Vec<OsString> {
    let is_scan = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "scan");
    if !is_scan {
        return args;
    }
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-iL") => "--input-list".into(),
            Some("-oG") => "--greppable".into(),
            _ => a,
        })
        .collect()
}

fn usage(e: ScanError) -> anyhow::Error {
    if e.is_usage() {
        Usage(e.to_string()).into()
    } else {
        e.into()
    }
}

fn read_targets(path: &PathBuf) -> Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line.context("cannot read targets from stdin")?);
        }
        lines.join("\n")
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the target list {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect())
}

pub async fn run(args: ScanArgs) -> Result<()> {
    let verbose = super::VERBOSE.load(Ordering::Relaxed) > 0;
    let mut texts = args.targets.clone();
    if let Some(path) = &args.input_list {
        texts.extend(read_targets(path)?);
    }
    if texts.is_empty() {
        return Err(Usage("no target given (try: sockit scan 127.0.0.1)".into()).into());
    }
    let targets = texts
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let ports = match (&args.ports, args.top_ports, args.fast) {
        (Some(spec), _, _) => scan::parse_ports(spec),
        (None, Some(n), _) => scan::top_ports(n),
        (None, None, true) => scan::top_ports(100),
        (None, None, false) => scan::top_ports(1000),
    }
    .map_err(usage)?;
    if args.min_timeout > args.max_timeout || args.min_timeout.is_zero() {
        return Err(Usage(format!(
            "--min-timeout {:?} must be above zero and at most --max-timeout {:?}",
            args.min_timeout, args.max_timeout
        ))
        .into());
    }
    if args.timeout.is_some_and(|t| t.is_zero()) {
        return Err(Usage("--timeout must be above zero".into()).into());
    }
    scan::target::check_size(&targets, args.max_hosts, args.confirm_large).map_err(usage)?;

    let (hosts, unresolved) = scan::target::resolve(&targets).await;
    for u in &unresolved {
        log::error(&format!(
            "sockit scan: cannot resolve {}: {} (skipped; scanning the others)",
            u.name, u.error
        ));
    }
    if hosts.is_empty() {
        return Err(ScanError::NoHosts.into());
    }

    let mut config = ScanConfig::new(hosts, ports);
    config.max_concurrency = args.max_concurrency;
    config.respect_fd_limit = !args.ignore_fd_limit;
    config.rate = (args.rate > 0.0).then_some(args.rate);
    config.timeouts = Timeouts {
        fixed: args.timeout,
        initial: args
            .max_timeout
            .min(Duration::from_secs(1))
            .max(args.min_timeout),
        min: args.min_timeout,
        max: args.max_timeout,
    };
    config.retries = args.retries;
    config.banner = args.banner.then_some(BannerConfig {
        wait: args.banner_wait,
        max_bytes: args.banner_bytes,
    });
    config.keep_all = verbose;
    config.lanes = args.lanes;

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let probes = config.hosts.len() as u64 * config.ports.len() as u64;
    let progress = Progress::new(probes, probes >= PROGRESS_MIN && !args.no_progress);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_failed: Option<std::io::Error> = None;
    let jsonl = args.jsonl;
    let stop = cancel.clone();
    let mut done = 0u64;
    let scanned = scan::run(config, cancel.clone(), |event| match event {
        Event::Started(limits) => {
            let line = format!(
                "sockit scan: open-file limit {}, descriptors free for {} connections: at most {} at once ({} lanes)",
                limits.fd_limit.map_or("unknown".into(), |l| l.to_string()),
                limits.fd_budget.map_or("any number of".into(), |b| b.to_string()),
                limits.max_concurrency,
                limits.lanes
            );
            if verbose {
                log::say(&line);
            } else if limits.fd_budget.is_some_and(|b| b < 256 && b < args.max_concurrency) {
                log::say(&format!("{line} (raise `ulimit -n` for a faster scan)"));
            }
        }
        Event::Result(r) => {
            done += 1;
            if done.is_multiple_of(64) {
                progress.inc(64);
            }
            if jsonl && (verbose || r.state == State::Open) && write_failed.is_none() {
                let written = writeln!(out, "{}", output::jsonl_result(r)).and_then(|()| {
                    if r.state == State::Open { out.flush() } else { Ok(()) }
                });
                if let Err(e) = written {
                    write_failed = Some(e);
                    stop.cancel();
                }
            }
        }
        Event::Note(text) => {
            if verbose {
                log::say(&format!("sockit scan: {text}"));
            }
        }
    })
    .await;
    progress.finish();
    let mut report = scanned.map_err(usage)?;
    report.unresolved = unresolved;
    if let Some(e) = write_failed {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("cannot write to stdout");
    }
    let summary = format!("sockit scan: {}", output::summary(&report));
    let printed = (|| -> std::io::Result<()> {
        if args.json {
            serde_json::to_writer_pretty(&mut out, &output::json(&report, verbose))?;
            writeln!(out)?;
            log::say(&summary);
        } else if jsonl {
            writeln!(out, "{}", output::jsonl_summary(&report))?;
            log::say(&summary);
        } else if let Some(path) = &args.greppable {
            let command: Vec<String> = std::env::args().collect();
            let text = output::greppable(&report, verbose, &command.join(" "));
            if path.as_os_str() == "-" {
                out.write_all(text.as_bytes())?;
            } else {
                std::fs::write(path, text)?;
                write!(out, "{}", output::table(&report, verbose))?;
                writeln!(out, "{summary}")?;
            }
            if path.as_os_str() == "-" {
                log::say(&summary);
            }
        } else {
            write!(out, "{}", output::table(&report, verbose))?;
            writeln!(out, "{summary}")?;
        }
        out.flush()
    })();
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write the scan's results"),
        Ok(()) => {}
    }
    drop(out);
    if report.interrupted {
        // Ctrl-C: what was found is printed; the exit says the scan did not finish.
        log::flush(Duration::from_millis(500));
        std::process::exit(130);
    }
    Ok(())
}
