//! `vmimage --generate`: the man page and completion scripts come from the clap definitions,
//! so every flag that `--help` lists is documented in them, and they are well-formed for the
//! programs that read them (groff, bash).

use std::process::{Command, Stdio};

use crate::util::Workdir;

const COMMANDS: [&str; 8] = [
    "info", "hash", "check", "verify", "metadata", "convert", "batch", "merge",
];

/// Every `--long` flag that `vmimage CMD --help` lists.
fn long_flags(w: &Workdir, command: &str) -> Vec<String> {
    let help = w.vmimage(&[command, "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let mut flags: Vec<String> = help
        .stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|t| t.starts_with("--") && t.len() > 2)
        .map(|t| {
            t.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
        .filter(|t| t != "--help")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn the_man_page_documents_every_flag_of_every_command_and_groff_reads_it_cleanly() {
    let w = Workdir::new();
    let man = w.vmimage(&["--generate", "man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.contains(".TH vmimage 1"),
        "{}",
        &man.stdout[..200]
    );
    for command in COMMANDS {
        let section = format!(".SH \"VMIMAGE {}\"", command.to_uppercase());
        let start = man
            .stdout
            .find(&section)
            .unwrap_or_else(|| panic!("no {section}"));
        let rest = &man.stdout[start + section.len()..];
        let body = &rest[..rest.find(".SH ").unwrap_or(rest.len())];
        let flags = long_flags(&w, command);
        assert!(!flags.is_empty(), "{command} --help lists no flags");
        for flag in flags {
            // roff escapes each hyphen.
            let escaped = flag.replace('-', "\\-");
            assert!(body.contains(&escaped), "{command}'s section lacks {flag}");
        }
    }
    // groff warns (-ww) about malformed requests; none may appear.
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (Debian groff-base) reads the man page");
    {
        use std::io::Write;
        let mut stdin = groff.stdin.take().expect("groff stdin");
        stdin.write_all(man.stdout.as_bytes()).expect("feed groff");
    }
    let out = groff.wait_with_output().expect("groff ran");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
}

#[test]
fn the_bash_completion_is_valid_bash_and_completes_every_command() {
    let w = Workdir::new();
    let script = w.vmimage(&["--generate", "complete-bash"]);
    assert_eq!(script.code, 0, "{}", script.stderr);
    let path = w.write("vmimage.bash", script.stdout.as_bytes());
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Ask the completion function itself, as bash would on `vmimage <TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(vmimage ''); COMP_CWORD=1; _vmimage vmimage '' vmimage; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let words = String::from_utf8_lossy(&out.stdout);
    for command in COMMANDS {
        assert!(
            words.lines().any(|l| l == command),
            "{command} not completed: {words}"
        );
    }
}

#[test]
fn every_shell_has_a_completion_script() {
    let w = Workdir::new();
    for (kind, marker) in [
        ("complete-zsh", "#compdef vmimage"),
        ("complete-fish", "complete -c vmimage"),
        ("complete-elvish", "edit:completion:arg-completer[vmimage]"),
        ("complete-powershell", "Register-ArgumentCompleter"),
    ] {
        let out = w.vmimage(&["--generate", kind]);
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{kind} lacks {marker}");
    }
}

#[test]
fn generate_with_a_command_or_an_unknown_kind_is_a_usage_error() {
    let w = Workdir::new();
    assert_eq!(w.vmimage(&["--generate", "man", "info", "x"]).code, 2);
    assert_eq!(w.vmimage(&["--generate", "pdf"]).code, 2);
    assert_eq!(w.vmimage(&[]).code, 2);
}
