//! The `vmimage` command: parses arguments, calls the library, renders the result.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect, hash, verify and convert VM disk images for cloud image services.
#[derive(Debug, Parser)]
#[command(name = "vmimage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Detect each image's format from its content and describe it, with a safety verdict.
    Info(cli::info::InfoArgs),
    /// Digest files in one read each (md5 and sha512 by default), or check manifests.
    Hash(cli::hash::HashArgs),
}

fn main() -> ExitCode {
    cli::restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            // clap formats its own usage errors; printing can only fail on a closed stream.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let status = match cli.command {
        Command::Info(args) => cli::info::run(&args),
        Command::Hash(args) => cli::hash::run(&args),
    };
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
