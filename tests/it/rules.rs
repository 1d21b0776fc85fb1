//! The safety rules' registry: ids unique and well formed, each one tested, and the docs table
//! (docs/rules.md) generated from the registry, so the documentation cannot drift.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vmimage::safety::{Severity, all_rules};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn rule_ids_are_unique_and_well_formed() {
    let mut seen = BTreeSet::new();
    for rule in all_rules() {
        assert!(
            seen.insert(rule.id),
            "rule id {} is registered twice",
            rule.id
        );
        let (scope, name) = rule
            .id
            .split_once('.')
            .unwrap_or_else(|| panic!("rule id {} has no `<format>.` prefix", rule.id));
        let kebab = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        assert!(
            kebab(scope) && kebab(name),
            "rule id {} is not kebab-case",
            rule.id
        );
        assert!(!rule.summary.is_empty(), "rule {} has no summary", rule.id);
    }
}

/// The docs table, one row per rule, in registry order.
fn rules_table() -> String {
    let mut out = String::from(
        "# Safety rules\n\n\
         <!-- Generated from the registry (`vmimage::safety::all_rules`) by \
         `VMIMAGE_UPDATE_DOCS=1 cargo test --release rules::docs`; do not edit by hand. -->\n\n\
         Every finding in `info --json` (and `check --json`'s inspector findings) carries one of \
         these ids in `rule`, and the coarse family in `check`. Ids never change meaning; a new \
         condition gets a new id. An `error` makes the image unsafe (`info` exits 1, \
         `convert` refuses it); a `warning` is reported and the image stays safe.\n\n\
         | Rule id | Check | Severity | What it means |\n\
         |---|---|---|---|\n",
    );
    for rule in all_rules() {
        let severity = match rule.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            rule.id,
            rule.check.name(),
            severity,
            rule.summary.replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn docs_rules_table_matches_the_registry() {
    let path = root().join("docs/rules.md");
    let want = rules_table();
    if std::env::var_os("VMIMAGE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/rules.md is out of date; run `VMIMAGE_UPDATE_DOCS=1 cargo test --release rules::docs`"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals among the arguments of a call whose text (after its opening
/// parenthesis) is `args`: up to the matching closing parenthesis, however rustfmt spread it
/// over lines.
fn string_literals_of_call(args: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut depth = 1usize;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            '"' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                literals.push(literal);
            }
            _ => {}
        }
    }
    literals
}

/// Every registered rule id appears as the id argument of an `assert_fires(..)` (library unit
/// tests) or `assert_rule(..)` (integration tests) call: a test makes each rule fire and checks
/// that exactly that id is reported.
#[test]
fn every_rule_is_tested() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    let mut asserted = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for call in ["assert_fires(", "assert_rule("] {
            for (at, _) in text.match_indices(call) {
                asserted.extend(string_literals_of_call(&text[at + call.len()..]));
            }
        }
    }
    let untested: Vec<&str> = all_rules()
        .map(|r| r.id)
        .filter(|id| !asserted.contains(*id))
        .collect();
    assert!(untested.is_empty(), "rules without a test: {untested:?}");
}
