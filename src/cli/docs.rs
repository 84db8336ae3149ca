//! `sockit completions SHELL` and `sockit man [TOOL]`: shell completion scripts (clap_complete)
//! and roff man pages (clap_mangen), made from the same command definition as `--help`, so they
//! never disagree with it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: ShellName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

impl From<ShellName> for Shell {
    fn from(s: ShellName) -> Shell {
        match s {
            ShellName::Bash => Shell::Bash,
            ShellName::Zsh => Shell::Zsh,
            ShellName::Fish => Shell::Fish,
            ShellName::Powershell => Shell::PowerShell,
            ShellName::Elvish => Shell::Elvish,
        }
    }
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The tool whose page to print (`listen`, `chat`...); without it, sockit's own page
    #[arg(value_name = "TOOL")]
    pub tool: Option<String>,

    /// Write every page (sockit.1, sockit-listen.1, ...) into this folder instead
    #[arg(long, value_name = "DIR", conflicts_with = "tool")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(Shell::from(args.shell), &mut cmd, "sockit", &mut out);
    write_stdout(&out)
}

/// Prints one man page, or writes them all into `--dir`.
pub fn man(args: ManArgs) -> Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    if let Some(dir) = args.dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot make the folder {}", dir.display()))?;
        let mut pages = vec![("sockit".to_string(), cmd.clone())];
        for sub in cmd.get_subcommands() {
            pages.push((format!("sockit-{}", sub.get_name()), sub.clone()));
        }
        for (name, page) in pages {
            let path = dir.join(format!("{name}.1"));
            let mut out = Vec::new();
            render(page.name(name.clone()), &mut out)?;
            std::fs::write(&path, out)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(());
    }
    let page = match &args.tool {
        None => cmd,
        Some(tool) => {
            let Some(sub) = cmd.find_subcommand(tool) else {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                return Err(super::Usage(format!(
                    "no tool named {tool:?} (one of: {})",
                    names.join(", ")
                ))
                .into());
            };
            sub.clone().name(format!("sockit-{tool}"))
        }
    };
    let mut out = Vec::new();
    render(page, &mut out)?;
    write_stdout(&out)
}

fn render(cmd: clap::Command, out: &mut Vec<u8>) -> Result<()> {
    clap_mangen::Man::new(cmd)
        .render(out)
        .context("cannot render the man page")
}

/// stdout closed early (`| head`) is the reader's choice, not a failure.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}
