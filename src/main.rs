//! The `vmimage` command: parses arguments, calls the library, renders the result.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect, hash, verify and convert VM disk images for cloud image services.
#[derive(Debug, Parser)]
#[command(
    name = "vmimage",
    version,
    about,
    long_about = None,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Print the man page or a shell completion script, generated from this command line's
    /// definitions, and exit (`vmimage --generate man | man -l -`).
    #[arg(long, value_enum, value_name = "KIND", exclusive = true)]
    generate: Option<cli::generate::Generate>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Detect each image's format from its content and describe it, with a safety verdict.
    Info(cli::info::InfoArgs),
    /// Digest files in one read each (md5 and sha512 by default), or check manifests.
    Hash(cli::hash::HashArgs),
    /// Check a qcow2 image's metadata as `qemu-img check` does, read-only, with its verdicts
    /// and exit statuses (0 clean, 2 corruptions, 3 leaks, 1 could not check, 63 no check).
    Check(cli::check::CheckArgs),
    /// Compare an image with what a cloud recorded (Glance, SCP, IMS, openstack CLI, sidecar).
    Verify(cli::verify::VerifyArgs),
    /// Write the request body that registers the image with glance, scp or ims.
    Metadata(cli::metadata::MetadataArgs),
    /// Sign a file for Glance: print its img_signature* properties (one read of the file).
    Sign(cli::sign::SignArgs),
    /// Convert raw, qcow2, VHD, VMDK, VHDX or VDI to qcow2 v3, sparse raw, VHD, VMDK or VHDX;
    /// print the output's digests.
    Convert(cli::convert::ConvertArgs),
    /// Run one shard of a catalogue audit: one result line per manifest item (hash, verify or
    /// audit), sharded for Kubernetes Indexed Jobs, Slurm arrays, AWS Batch arrays.
    Batch(cli::batch::BatchArgs),
    /// Merge every shard's results against the manifest: totals, missing and duplicate items,
    /// the worst status as exit status.
    Merge(cli::merge::MergeArgs),
}

fn main() -> ExitCode {
    cli::restore_sigpipe();
    cli::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error means the job could not be done: 2 everywhere, but 1 for `check`,
            // whose statuses are qemu-img's (2 would read as "corruptions found").
            let is_check = std::env::args_os().nth(1).is_some_and(|a| a == "check");
            let code = match (e.use_stderr(), is_check) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => 2,
            };
            // clap formats its own usage errors; printing can only fail on a closed stream.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let command = match (cli.command, cli.generate) {
        (Some(command), _) => command,
        (None, Some(kind)) => {
            use clap::CommandFactory;
            let mut out = std::io::stdout().lock();
            return match cli::generate::write(kind, Cli::command(), &mut out) {
                Ok(()) => ExitCode::from(cli::EXIT_OK),
                Err(e) => {
                    cli::print_error(format_args!("cannot write the generated text: {e}"));
                    ExitCode::from(cli::EXIT_ERROR)
                }
            };
        }
        // `arg_required_else_help` and `exclusive` leave no other case: clap has already
        // printed the help and exited.
        (None, None) => return ExitCode::from(cli::EXIT_ERROR),
    };
    let status = match command {
        Command::Info(args) => cli::info::run(&args),
        Command::Hash(args) => cli::hash::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Verify(args) => cli::verify::run(&args),
        Command::Metadata(args) => cli::metadata::run(&args),
        Command::Convert(args) => cli::convert::run(&args),
        Command::Sign(args) => cli::sign::run(&args),
        Command::Batch(args) => cli::batch::run(&args),
        Command::Merge(args) => cli::merge::run(&args),
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
