//! The `sockit` binary: parses the command line, sets up logging, runs a tool, and turns its result
//! into one line on stderr and a meaningful exit code (0 ok, 1 failed at run time, 2 usage).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a server's request path allocates and frees many small
/// buffers across threads; glibc's malloc and free were 7% of `sockit http`'s CPU under wrk
/// (perf record, bench/http.sh's 1 KiB case).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First, so that even a usage error is written through the non-blocking writer (and as JSON
    // when asked).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    cli::log::init(
        args.iter().any(|a| a == "--log-json"),
        log_queue_arg(&args).unwrap_or(cli::log::QUEUE_LINES),
    );
    let code = run();
    cli::log::flush(cli::log::EXIT_FLUSH);
    code
}

/// `--log-queue N` (or `=N`), read before the arguments are parsed because the writer starts
/// first; a malformed value is left for the parser to report.
fn log_queue_arg(args: &[std::ffi::OsString]) -> Option<usize> {
    let mut it = args.iter().map(|a| a.to_str().unwrap_or(""));
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--log-queue") {
            Some("") => it.next(),
            Some(rest) => rest.strip_prefix('='),
            None => continue,
        };
        return value
            .and_then(|v| v.parse().ok())
            .filter(|&n| (1..=1_000_000).contains(&n));
    }
    None
}

fn run() -> ExitCode {
    let argv = cli::scan::nmap_spellings(std::env::args_os().collect());
    let args = match cli::Cli::try_parse_from(argv) {
        Ok(args) => args,
        // Usage errors are one line, like every other error (clap's own rendering adds a blank line
        // and a help pointer); --help, --version and the help shown for a bare `sockit` still print
        // as clap renders them.
        Err(err)
            if err.use_stderr()
                && err.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            cli::log::error(&format!("sockit: {} (try --help)", usage_line(&err)));
            return ExitCode::from(2);
        }
        Err(err) => err.exit(),
    };
    init_logging(&args);
    cli::VERBOSE.store(args.verbose, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = sockit::net::raise_fd_limit() {
        tracing::debug!(error = %e, "cannot raise the open-file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::log::error(&format!("sockit: cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(args.tool.run());
    // Tasks still blocked (a name lookup, a write to a full pipe) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cli::log::error(&format!("sockit: {}", one_line(&err)));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The error and its causes as one line, each thing said once. The net layer's errors already
/// describe their I/O cause in words, so the chain stops there rather than repeating it in the
/// OS's phrasing; and a cause whose text the line already holds (many errors print their source
/// in their own message) is left out.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // What the cause says after its own prefixes (`Error code 26: `), in words.
        let plain = strip_os_error(&text).to_lowercase();
        let core = plain.rsplit(": ").next().unwrap_or(&plain).trim();
        if line.is_empty() {
            line = text;
        } else if core.is_empty() || !line.to_lowercase().contains(core) {
            line.push_str(": ");
            line.push_str(&text);
        }
        if cause.is::<sockit::net::NetError>() {
            break;
        }
    }
    line
}

/// `Address already in use (os error 98)` -> `Address already in use`.
fn strip_os_error(text: &str) -> &str {
    match text.find(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    }
}

/// clap's message as one line: its first paragraph (what is wrong, and on which argument), with
/// the `error: ` prefix and the usage/tip paragraphs dropped.
fn usage_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.split("\n\n").next().unwrap_or("");
    let line = first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// 2 for usage errors the library recognises (bad address, bad allow/deny entry), else 1.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<cli::Usage>() {
            return 2;
        }
        if let Some(net) = cause.downcast_ref::<sockit::net::NetError>() {
            return net.exit_code() as u8;
        }
    }
    1
}

fn init_logging(args: &cli::Cli) {
    let netcat = args.tool.netcat_name();
    let default = match (args.quiet || args.quiet_short, args.verbose) {
        // Log lines on stderr would land in the middle of the full-screen client (-v still logs,
        // for a 2>file redirect).
        (_, 0) if args.tool.is_fullscreen() => "off",
        (true, _) => "error",
        // The netcat is quiet as ncat is; -v gives ncat's lines (connected, bytes moved), -vv
        // the details.
        (false, 0) if netcat.is_some() => "warn",
        (false, 1) if netcat.is_some() => "warn,sockit=info",
        (false, 2) if netcat.is_some() => "info,sockit=debug",
        (false, 0) if args.tool.is_server() => "warn,sockit=info",
        (false, 0) => "warn",
        (false, 1) => "info,sockit=debug",
        _ => "debug,sockit=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!args.log_json && std::io::stderr().is_terminal())
        .with_writer(cli::log::Stderr)
        .log_internal_errors(false);
    match (args.log_json, netcat) {
        // `message` at the top level, as in the announcements.
        (true, _) => builder.json().flatten_event(true).init(),
        (false, Some(tool)) => builder.event_format(cli::log::NetcatStyle { tool }).init(),
        (false, None) => builder.init(),
    }
}
