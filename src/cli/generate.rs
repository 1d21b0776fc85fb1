//! `vmimage --generate KIND`: the man page and shell completion scripts, generated from the
//! clap definitions so that the flags are documented in one place (ripgrep's `--generate`).

use std::io::{self, Write};

use clap::ValueEnum;
use clap_complete::Shell;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// The man page, roff, one page with a section per command (`man -l -` reads it).
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script.
    CompleteZsh,
    /// A fish completion script.
    CompleteFish,
    /// An elvish completion script.
    CompleteElvish,
    /// A PowerShell completion script.
    CompletePowershell,
}

/// Writes `kind` for the command line `cmd` to `out`.
pub fn write(kind: Generate, mut cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let shell = match kind {
        Generate::Man => return write_man(cmd, out),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
        Generate::CompleteElvish => Shell::Elvish,
        Generate::CompletePowershell => Shell::PowerShell,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// One page: the top-level sections, then for each command a section named after it whose
/// synopsis, description and options are subsections (`.SS`), so `man vmimage` and a search in
/// it find every flag.
fn write_man(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    top.render_title(out)?;
    top.render_name_section(out)?;
    top.render_synopsis_section(out)?;
    top.render_description_section(out)?;
    top.render_options_section(out)?;
    top.render_subcommands_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let title = sub
            .get_display_name()
            .unwrap_or_else(|| sub.get_name())
            .replace('-', " ")
            .to_uppercase();
        writeln!(out, ".SH \"{title}\"")?;
        let page = clap_mangen::Man::new(sub.clone());
        let mut body = Vec::new();
        page.render_synopsis_section(&mut body)?;
        page.render_description_section(&mut body)?;
        page.render_options_section(&mut body)?;
        for line in String::from_utf8_lossy(&body).lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => writeln!(out, ".SS {heading}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    top.render_version_section(out)
}
