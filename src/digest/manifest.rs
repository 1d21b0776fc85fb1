//! Checksum manifests as coreutils reads them (`md5sum -c`, `sha256sum -c`, `cksum -c`), plus
//! PGP-clearsigned ones. Parsing only: no I/O, no printing.
//!
//! What a line may be (coreutils 9.1 `digest.c`, `split_3` and `bsd_split_3`; uutils'
//! `checksum/validate.rs` documents the same rules):
//! - a comment: the line *starts* with `#` (no leading blanks), or an empty line: skipped;
//! - untagged (GNU): optional blanks, an optional `\` (the name is escaped), the hex digest,
//!   one blank (space or TAB), then `' '` (text) or `'*'` (binary) and the name. The second
//!   field may be missing (`hex name` or `hex<TAB>name`, as Packer writes): then the name
//!   starts right after the first blank. As in coreutils, a manifest cannot mix the two
//!   layouts; the first untagged line decides, and lines of the other layout are improperly
//!   formatted (an attacker's file named ` x` must not be confused with `x`);
//! - tagged (BSD): optional blanks, optional `\`, `TAG (name) = hex`, the name running to the
//!   *last* `)` of the line;
//! - anything else is improperly formatted, and so is a digest of the wrong length or with a
//!   non-hex character (not a mismatch), or an escaped name with a `\` not followed by `\`,
//!   `n` or `r`.
//!
//! A trailing CR is dropped (CRLF files); hex digits may be upper case. The algorithm of an
//! untagged line is the one whose hex digest has that many characters (32 MD5, 40 SHA-1, 56
//! SHA-224, 64 SHA-256, 96 SHA-384, 128 SHA-512); `allowed` narrows that (`--algo`), as
//! `sha256sum -c` only reads SHA-256 lines.
//!
//! PGP: a manifest whose first line is `-----BEGIN PGP SIGNED MESSAGE-----` is read as an
//! RFC 4880 (7.1) cleartext signature: the armor headers up to the first empty line, and the
//! signature block from `-----BEGIN PGP SIGNATURE-----` on, are dropped, and `- ` is removed
//! from dash-escaped lines. The signature itself is NOT verified (that is gpg's job), which
//! [`Manifest::pgp_signed`] lets the caller say.

use super::algorithm::Algorithm;

/// The largest manifest read, in bytes: our memory budget (a distribution's SHA256SUMS is a
/// few MB at most).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;

/// One checked line: a file and the digest it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The line's number in the manifest file (1-based).
    pub line: usize,
    /// The algorithm (from the tag, or from the digest's length).
    pub algorithm: Algorithm,
    /// The expected digest.
    pub expected: Vec<u8>,
    /// The file name, unescaped, as bytes (names need not be UTF-8).
    pub file: Vec<u8>,
    /// `hex *name`: coreutils' binary mode, which means nothing on POSIX systems.
    pub binary: bool,
    /// A BSD-tagged line.
    pub tagged: bool,
}

/// One line of a manifest that is neither empty nor a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A well-formed line.
    Entry(Entry),
    /// An improperly formatted line, by number (1-based).
    Improper(usize),
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The lines to check (comments and empty lines left out), in file order.
    pub lines: Vec<Line>,
    /// Whether this was a PGP-clearsigned manifest (whose signature was NOT verified).
    pub pgp_signed: bool,
}

/// Which untagged layout a manifest uses, decided by its first untagged line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `hex  name` / `hex *name`.
    TwoField,
    /// `hex name` / `hex<TAB>name`.
    OneSeparator,
}

const PGP_BEGIN: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const PGP_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";

/// Parses a manifest. `allowed` limits the algorithms (an empty slice allows all).
/// `name_dash_is_invalid` is set when the manifest itself is standard input: a line naming
/// `-` cannot then be checked, and coreutils calls it improperly formatted.
pub fn parse(text: &[u8], allowed: &[Algorithm], name_dash_is_invalid: bool) -> Manifest {
    let mut manifest = Manifest::default();
    let mut layout = None;
    let mut pgp = Pgp::Outside;
    let lines = split_lines(text);
    for (index, raw) in lines.into_iter().enumerate() {
        let number = index + 1;
        let mut line = raw;
        // Armor lines are recognised without their line ending or trailing blanks.
        let bare = line.trim_ascii_end();
        match pgp {
            Pgp::Outside if index == 0 && bare == PGP_BEGIN => {
                manifest.pgp_signed = true;
                pgp = Pgp::Headers;
                continue;
            }
            Pgp::Headers => {
                if bare.is_empty() {
                    pgp = Pgp::Body;
                }
                continue;
            }
            Pgp::Body if bare == PGP_SIGNATURE => {
                pgp = Pgp::Signature;
                continue;
            }
            Pgp::Body => {
                if let Some(rest) = line.strip_prefix(b"- ") {
                    line = rest;
                }
            }
            Pgp::Signature => continue,
            Pgp::Outside => {}
        }
        if line.first() == Some(&b'#') {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let parsed = parse_line(line, number, allowed, &mut layout)
            .filter(|e| !(name_dash_is_invalid && e.file == b"-"));
        manifest.lines.push(match parsed {
            Some(entry) => Line::Entry(entry),
            None => Line::Improper(number),
        });
    }
    manifest
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pgp {
    Outside,
    Headers,
    Body,
    Signature,
}

/// Lines without their `\n` (a final line without one counts).
fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if text.is_empty() || text.ends_with(b"\n") {
        lines.pop();
    }
    lines
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn parse_line(
    line: &[u8],
    number: usize,
    allowed: &[Algorithm],
    layout: &mut Option<Layout>,
) -> Option<Entry> {
    let mut s = line;
    while let Some((&b, rest)) = s.split_first() {
        if !is_blank(b) {
            break;
        }
        s = rest;
    }
    let escaped = s.first() == Some(&b'\\');
    if escaped {
        s = &s[1..];
    }
    let permitted = |a: Algorithm| allowed.is_empty() || allowed.contains(&a);

    // Tagged: `TAG (name) = hex`, or `TAG(name)= hex` as OpenSSL writes it.
    if let Some(algorithm) = Algorithm::ALL
        .into_iter()
        .find(|a| s.starts_with(a.tag().as_bytes()))
    {
        let mut rest = &s[algorithm.tag().len()..];
        if rest.first() == Some(&b' ') {
            rest = &rest[1..];
        }
        let rest = rest.strip_prefix(b"(")?;
        let close = rest.iter().rposition(|b| *b == b')')?;
        let name = &rest[..close];
        let mut tail = &rest[close + 1..];
        tail = tail.trim_ascii_start();
        tail = tail.strip_prefix(b"=")?;
        let hex = tail.trim_ascii_start();
        if !permitted(algorithm) || hex.len() != algorithm.output_len() * 2 {
            return None;
        }
        return Some(Entry {
            line: number,
            algorithm,
            expected: decode_hex(hex)?,
            file: file_name(name, escaped)?,
            binary: false,
            tagged: true,
        });
    }

    // Untagged: the hex digest, one blank, then the name (after ` ` or `*` in the two-field
    // layout).
    let hex_len = s.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let algorithm = Algorithm::from_hex_len(hex_len).filter(|a| permitted(*a))?;
    let (hex, rest) = s.split_at(hex_len);
    let (&sep, rest) = rest.split_first()?;
    if !is_blank(sep) || rest.is_empty() {
        return None;
    }
    let one_separator = rest.len() == 1 || (rest[0] != b' ' && rest[0] != b'*');
    let (binary, name) = if one_separator {
        if *layout == Some(Layout::TwoField) {
            return None;
        }
        *layout = Some(Layout::OneSeparator);
        (false, rest)
    } else if *layout == Some(Layout::OneSeparator) {
        // Once the manifest is one-separator, ` ` and `*` belong to the name.
        (false, rest)
    } else {
        *layout = Some(Layout::TwoField);
        (rest[0] == b'*', &rest[1..])
    };
    Some(Entry {
        line: number,
        algorithm,
        expected: decode_hex(hex)?,
        file: file_name(name, escaped)?,
        binary,
        tagged: false,
    })
}

/// The bytes of a digest written in hex (either case), or `None` if it is not hex.
fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    hex::decode(digits).ok()
}

/// A line's file name, unescaped when the line began with a backslash (GNU's escaped names).
fn file_name(name: &[u8], escaped: bool) -> Option<Vec<u8>> {
    if escaped {
        unescape(name)
    } else {
        Some(name.to_vec())
    }
}

/// Undoes coreutils' name escaping: `\\` is a backslash, `\n` a newline, `\r` a carriage
/// return (coreutils 9.2+); any other escape, or a NUL, makes the line invalid.
fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut bytes = name.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next()? {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                _ => return None,
            },
            0 => return None,
            _ => out.push(b),
        }
    }
    Some(out)
}

/// Whether a name must be printed escaped (with a leading `\`), as coreutils does for names
/// holding a backslash, newline or carriage return.
pub fn needs_escape(name: &[u8]) -> bool {
    name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'))
}

/// Whether `--check` output must print a name escaped: coreutils 9.1 does so only for names
/// holding a newline (a backslash alone is printed as is there, unlike in digest output).
pub fn needs_escape_in_check(name: &[u8]) -> bool {
    name.contains(&b'\n')
}

/// A name as coreutils prints it in `name: OK` lines and in BSD-tagged output: escaped when
/// [`needs_escape`] (then the caller prints a `\` before the line).
pub fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5_A: &str = "0cc175b9c0f1b6a831c399e269772661";

    fn one(text: &str) -> Line {
        let m = parse(text.as_bytes(), &[], false);
        assert_eq!(m.lines.len(), 1, "{text:?} gave {:?}", m.lines);
        m.lines[0].clone()
    }

    fn entry(text: &str) -> Entry {
        match one(text) {
            Line::Entry(e) => e,
            Line::Improper(_) => panic!("{text:?} was improperly formatted"),
        }
    }

    #[test]
    fn gnu_two_space_and_binary_lines() {
        let e = entry(&format!("{MD5_A}  disk.qcow2\n"));
        assert_eq!(
            (e.algorithm, e.file.as_slice(), e.binary),
            (Algorithm::Md5, &b"disk.qcow2"[..], false)
        );
        let e = entry(&format!("{MD5_A} *disk.qcow2\n"));
        assert!(e.binary);
        assert_eq!(e.file, b"disk.qcow2");
    }

    #[test]
    fn a_tab_separator_as_packer_writes_it() {
        let e = entry(&format!("{MD5_A}\tdisk.qcow2"));
        assert_eq!(e.file, b"disk.qcow2");
    }

    #[test]
    fn crlf_uppercase_and_leading_blanks_are_accepted() {
        let e = entry(&format!("  {}  a b\r\n", MD5_A.to_uppercase()));
        assert_eq!(e.file, b"a b");
        assert_eq!(e.expected[0], 0x0c);
    }

    #[test]
    fn comments_and_empty_lines_are_skipped_but_an_indented_hash_is_not_a_comment() {
        let m = parse(format!("# c\n\n{MD5_A}  a\n  # x\n").as_bytes(), &[], false);
        assert_eq!(m.lines.len(), 2);
        assert_eq!(m.lines[1], Line::Improper(4));
    }

    #[test]
    fn bsd_tagged_lines_split_at_the_last_parenthesis() {
        let e = entry(&format!("MD5 (a (1).img) = {MD5_A}"));
        assert_eq!(e.file, b"a (1).img");
        assert!(e.tagged);
        let e = entry(&format!("MD5(openssl)= {MD5_A}"));
        assert_eq!(e.file, b"openssl");
    }

    #[test]
    fn escaped_names_are_unescaped_and_bad_escapes_are_improper() {
        let e = entry(&format!("\\{MD5_A}  a\\\\b\\nc"));
        assert_eq!(e.file, b"a\\b\nc");
        let e = entry(&format!("\\MD5 (a\\\\b) = {MD5_A}"));
        assert_eq!(e.file, b"a\\b");
        assert_eq!(one(&format!("\\{MD5_A}  a\\tb")), Line::Improper(1));
    }

    #[test]
    fn a_digest_of_the_wrong_length_is_improper_not_a_mismatch() {
        assert_eq!(one("0cc175b9c0f1b6a831c399e26977266  a"), Line::Improper(1));
        assert_eq!(one(&format!("SHA256 (a) = {MD5_A}")), Line::Improper(1));
        assert_eq!(one(&format!("{MD5_A}g  a")), Line::Improper(1));
    }

    #[test]
    fn allowed_algorithms_narrow_untagged_and_tagged_lines() {
        let m = parse(
            format!("{MD5_A}  a\n").as_bytes(),
            &[Algorithm::Sha256],
            false,
        );
        assert_eq!(m.lines, vec![Line::Improper(1)]);
    }

    #[test]
    fn the_two_untagged_layouts_do_not_mix() {
        let m = parse(format!("{MD5_A} a\n{MD5_A}  b\n").as_bytes(), &[], false);
        // In a one-separator manifest the second line's name is " b".
        match &m.lines[1] {
            Line::Entry(e) => assert_eq!(e.file, b" b"),
            other => panic!("{other:?}"),
        }
        let m = parse(format!("{MD5_A}  a\n{MD5_A} b\n").as_bytes(), &[], false);
        assert_eq!(m.lines[1], Line::Improper(2));
    }

    #[test]
    fn a_dash_name_is_improper_when_the_manifest_is_stdin() {
        let m = parse(format!("{MD5_A}  -\n").as_bytes(), &[], true);
        assert_eq!(m.lines, vec![Line::Improper(1)]);
    }

    #[test]
    fn pgp_clearsigned_manifests_lose_their_armor_and_dash_escapes() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{MD5_A}  a\n- {MD5_A}  b\n\
             -----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
        );
        let m = parse(text.as_bytes(), &[], false);
        assert!(m.pgp_signed);
        let names: Vec<_> = m
            .lines
            .iter()
            .map(|l| match l {
                Line::Entry(e) => (e.line, e.file.clone()),
                Line::Improper(n) => (*n, b"?".to_vec()),
            })
            .collect();
        assert_eq!(names, vec![(4, b"a".to_vec()), (5, b"b".to_vec())]);
    }

    #[test]
    fn names_with_backslashes_or_newlines_are_escaped_for_output() {
        assert!(needs_escape(b"a\\b"));
        assert!(!needs_escape(b"a b"));
        assert_eq!(escape(b"a\\b\nc"), b"a\\\\b\\nc");
    }
}
