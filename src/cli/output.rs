//! What the commands do around the files they write (the writing itself, aside then renamed,
//! is the library's [`vmimage::atomic`]): the interrupt handler that removes the temporary
//! files, and whole documents (sidecars, JUnit reports) written under it.

use std::path::{Path, PathBuf};

/// Deletes the temporary files and exits 130 on SIGINT, SIGTERM or SIGHUP. `output` names the
/// file being written in the message.
pub fn install_interrupt_handler(output: PathBuf) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                // Nothing removed: the command had not started writing, or its output was
                // already complete and renamed into place.
                let removed = vmimage::atomic::remove_temporary_files();
                let out = output.display();
                if removed > 0 {
                    eprintln!("vmimage: {out}: interrupted; the partial output was removed");
                } else {
                    eprintln!("vmimage: {out}: interrupted");
                }
                std::process::exit(130);
            }
        })?;
    Ok(())
}

/// Writes a whole document to `path` with [`vmimage::atomic::write_file`], under the interrupt
/// handler, so that a signal during the write leaves neither a temporary file nor a partial
/// `path`. The handler is installed only now: a signal before (during the reads, which can
/// take minutes) keeps its default action, as nothing needs removing.
pub fn write_document(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    install_interrupt_handler(path.to_path_buf())?;
    vmimage::atomic::write_file(path, bytes)
}
