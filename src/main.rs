//! The `sockit` binary: parses the command line, sets up logging, runs a tool, and turns its result
//! into one line on stderr and a meaningful exit code (0 ok, 1 failed at run time, 2 usage).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockit: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(args.tool.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sockit: {}", one_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The error and its causes as one line. The net layer's errors already describe their I/O cause
/// in words, so the chain stops there rather than repeating it in the OS's phrasing.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        if cause.is::<sockit::net::NetError>() {
            break;
        }
    }
    parts.join(": ")
}

/// 2 for usage errors the library recognises (bad address, bad allow/deny entry), else 1.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(net) = cause.downcast_ref::<sockit::net::NetError>() {
            return net.exit_code() as u8;
        }
    }
    1
}

fn init_logging(args: &cli::Cli) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) if args.tool.is_server() => "warn,sockit=info",
        (false, 0) => "warn",
        (false, 1) => "info,sockit=debug",
        _ => "debug,sockit=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
