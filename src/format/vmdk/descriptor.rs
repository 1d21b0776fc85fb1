//! The VMDK text descriptor: QEMU's way of reading it (C-string searches and `sscanf`), and
//! OpenStack's strict line grammar.
//!
//! QEMU does not parse the descriptor line by line. It finds keys with `strstr()` anywhere in
//! the text, reads the CID with `sscanf("%x")` from a fixed 10 KiB window, and scans extents
//! with `sscanf()` from the start of every line, which skips whitespace (newlines included):
//! a blank line before an extent line makes QEMU read that extent twice. The functions here
//! reproduce those semantics exactly, so the reported facts match `qemu-img info`, and in
//! linear time whatever the input (see [`scan_extents`]).

/// QEMU's `DESC_SIZE`: the window `vmdk_read_cid()` and `vmdk_parent_open()` search.
pub const CID_WINDOW: usize = 20 * 512;
/// `sizeof(bs->auto_backing_file) - 1`: longer parent names make QEMU fail the open.
const MAX_PARENT_NAME: usize = 4095;
/// `char ct[128]` in `vmdk_open_desc_file()`.
const MAX_CREATE_TYPE: usize = 127;
/// Field widths of the extent `sscanf()` format (`%10s`, `%511[...]`).
const ACCESS_WIDTH: usize = 10;
const TYPE_WIDTH: usize = 10;
const NAME_WIDTH: usize = 511;
/// The most extent lines reported; more is not a disk anyone made (QEMU's own
/// `twoGbMaxExtent*` images of its 2 TiB limit have 1024).
pub const MAX_EXTENTS: usize = 1024;

/// The text up to the first NUL, as C code sees a buffer.
pub fn c_text(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// `strstr()`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `vmdk_parse_description()`: the value after `key` and the two characters that follow it
/// (normally `="`), up to the next `"`. `None` when the key or the closing quote is missing,
/// or the value does not fit QEMU's buffer.
pub fn quoted_value(text: &[u8], key: &str, max_len: usize) -> Option<String> {
    let start = find(text, key.as_bytes())? + key.len() + 2;
    let rest = text.get(start..)?;
    let len = rest.iter().position(|&b| b == b'"')?;
    (len <= max_len).then(|| String::from_utf8_lossy(&rest[..len]).into_owned())
}

/// The descriptor's `createType`, as QEMU reads it.
pub fn create_type(text: &[u8]) -> Option<String> {
    quoted_value(text, "createType", MAX_CREATE_TYPE)
}

/// `vmdk_read_cid()`: the hex number after the first `CID` (or `parentCID`) and one more
/// character, in the C string of `window`. Like `strstr`, a `parentCID` that comes before
/// `CID` is found by the search for `CID`.
pub fn read_cid(window: &[u8], parent: bool) -> Option<u32> {
    let text = c_text(window);
    let key: &[u8] = if parent { b"parentCID" } else { b"CID" };
    let start = find(text, key)? + key.len() + 1;
    scan_hex(text.get(start..)?)
}

/// `sscanf("%x")` into a `uint32_t`: optional whitespace, sign and `0x`, then hex digits;
/// glibc saturates the `unsigned long` and stores its low 32 bits.
fn scan_hex(s: &[u8]) -> Option<u32> {
    let mut i = s.iter().take_while(|b| is_space(**b)).count();
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
    }
    let digits = s[i.min(s.len())..]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit());
    let mut value = 0u64;
    let mut any = false;
    for &d in digits {
        any = true;
        let v = u64::from((d as char).to_digit(16).unwrap_or(0));
        value = value
            .checked_mul(16)
            .and_then(|x| x.checked_add(v))
            .unwrap_or(u64::MAX);
    }
    if !any {
        return None;
    }
    let value = if negative {
        value.wrapping_neg()
    } else {
        value
    };
    Some(value as u32)
}

/// What `vmdk_parent_open()` makes of `parentFileNameHint="..."` in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentHint {
    /// No hint: no backing file.
    None,
    /// The parent's file name.
    Name(String),
    /// A hint QEMU cannot use (no closing quote, or longer than 4095 bytes).
    Invalid,
}

/// `vmdk_parent_open()`.
pub fn parent_hint(window: &[u8]) -> ParentHint {
    const KEY: &[u8] = b"parentFileNameHint";
    let text = c_text(window);
    let Some(at) = find(text, KEY) else {
        return ParentHint::None;
    };
    let Some(rest) = text.get(at + KEY.len() + 2..) else {
        return ParentHint::Invalid;
    };
    match rest.iter().position(|&b| b == b'"') {
        Some(len) if len <= MAX_PARENT_NAME => {
            ParentHint::Name(String::from_utf8_lossy(&rest[..len]).into_owned())
        }
        _ => ParentHint::Invalid,
    }
}

/// C's `isspace()` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// An extent line as QEMU's `sscanf()` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY`, `NOACCESS`.
    pub access: String,
    /// Size in sectors.
    pub sectors: i64,
    /// `FLAT`, `SPARSE`, `VMFS`, `VMFSSPARSE`, `SESPARSE`, ...
    pub kind: String,
    /// The extent file name.
    pub file: String,
    /// The offset of a flat extent in its file, in sectors (`-1` when absent).
    pub flat_offset: i64,
    /// How many `sscanf` conversions succeeded (4 or 5).
    pub matches: usize,
}

/// What QEMU's `vmdk_parse_extents()` does with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentOutcome {
    /// Not an extent QEMU opens (too few fields, not `RW`, zero size or unknown type).
    Skipped,
    /// QEMU opens this extent.
    Opened(ExtentLine),
    /// QEMU fails the open: "Invalid extent line".
    Invalid(String),
}

/// A cursor implementing the parts of `sscanf` the extent format uses, with whitespace
/// skipping in O(1) through a precomputed table (so that scanning from every line start stays
/// linear even for a descriptor of a million blank lines).
struct Scanner<'a> {
    text: &'a [u8],
    next_non_space: &'a [u32],
    pos: usize,
}

impl Scanner<'_> {
    fn skip_space(&mut self) {
        self.pos = self.next_non_space[self.pos] as usize;
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// `%Ns`.
    fn string(&mut self, width: usize) -> Option<String> {
        self.skip_space();
        let start = self.pos;
        while self.pos < self.text.len()
            && self.pos - start < width
            && !is_space(self.text[self.pos])
        {
            self.pos += 1;
        }
        (self.pos > start)
            .then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    /// `%SCNd64` (`strtoll`, saturating). Long digit runs are consumed without limit, as C
    /// does; the caller bounds how often a run can be scanned.
    fn int64(&mut self) -> Option<i64> {
        self.skip_space();
        let mut i = self.pos;
        let negative = match self.text.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut value: i128 = 0;
        while let Some(d) = self.text.get(i).filter(|d| d.is_ascii_digit()) {
            value = (value * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX) + 1);
            i += 1;
        }
        if i == start {
            return None;
        }
        self.pos = i;
        let value = if negative { -value } else { value };
        Some(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// A literal character (a format character other than whitespace or `%`).
    fn literal(&mut self, c: u8) -> bool {
        if self.text.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `%511[^\n\r"]`.
    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while self.pos < self.text.len()
            && self.pos - start < NAME_WIDTH
            && !matches!(self.text[self.pos], b'\n' | b'\r' | b'"')
        {
            self.pos += 1;
        }
        (self.pos > start)
            .then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }
}

/// `sscanf(p, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, ...)` from `pos`; returns
/// the line when at least four conversions succeeded.
fn scan_line(sc: &mut Scanner<'_>) -> Option<ExtentLine> {
    let access = sc.string(ACCESS_WIDTH)?;
    let sectors = sc.int64()?;
    let kind = sc.string(TYPE_WIDTH)?;
    sc.skip_space();
    if !sc.literal(b'"') {
        return None;
    }
    let file = sc.name()?;
    let mut line = ExtentLine {
        access,
        sectors,
        kind,
        file,
        flat_offset: -1,
        matches: 4,
    };
    if sc.literal(b'"')
        && !sc.at_end()
        && let Some(offset) = sc.int64()
    {
        line.flat_offset = offset;
        line.matches = 5;
    }
    Some(line)
}

/// Runs QEMU's extent loop over the descriptor's C string: one `sscanf` from the start of
/// every line, then `vmdk_parse_extents()`'s acceptance rules. Stops at the first invalid
/// line (QEMU fails the open there) or after [`MAX_EXTENTS`] opened extents.
///
/// Every line start first skips whitespace, so the lines of a blank run all scan from the
/// same position; the last result is reused for them, which keeps the whole loop linear.
pub fn scan_extents(text: &[u8]) -> Vec<ExtentOutcome> {
    let text = c_text(text);
    let mut next_non_space = vec![0u32; text.len() + 1];
    next_non_space[text.len()] = text.len() as u32;
    for i in (0..text.len()).rev() {
        next_non_space[i] = if is_space(text[i]) {
            next_non_space[i + 1]
        } else {
            i as u32
        };
    }
    let mut outcomes = Vec::new();
    let mut opened = 0usize;
    let mut cache: Option<(usize, Option<ExtentLine>)> = None;
    let mut line_start = 0usize;
    while line_start < text.len() {
        let from = next_non_space[line_start] as usize;
        let scanned = match &cache {
            Some((at, result)) if *at == from => result.clone(),
            _ => {
                let mut sc = Scanner {
                    text,
                    next_non_space: &next_non_space,
                    pos: from,
                };
                let result = scan_line(&mut sc);
                cache = Some((from, result.clone()));
                result
            }
        };
        let outcome = judge(scanned, &text[line_start..]);
        let stop = matches!(outcome, ExtentOutcome::Invalid(_));
        if matches!(outcome, ExtentOutcome::Opened(_)) {
            opened += 1;
        }
        if !matches!(outcome, ExtentOutcome::Skipped) {
            outcomes.push(outcome);
        }
        if stop || opened >= MAX_EXTENTS {
            break;
        }
        line_start = match text[line_start..].iter().position(|&b| b == b'\n') {
            Some(n) => line_start + n + 1,
            None => text.len(),
        };
    }
    outcomes
}

/// `vmdk_parse_extents()`'s rules for one scanned line.
fn judge(scanned: Option<ExtentLine>, line: &[u8]) -> ExtentOutcome {
    let Some(mut l) = scanned else {
        return ExtentOutcome::Skipped;
    };
    if l.access != "RW" {
        return ExtentOutcome::Skipped;
    }
    let invalid = || {
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        ExtentOutcome::Invalid(String::from_utf8_lossy(&line[..end.min(200)]).into_owned())
    };
    match l.kind.as_str() {
        "FLAT" if l.matches != 5 || l.flat_offset < 0 => return invalid(),
        "FLAT" => {}
        "VMFS" if l.matches == 4 => l.flat_offset = 0,
        "VMFS" => return invalid(),
        _ if l.matches != 4 => return invalid(),
        _ => {}
    }
    let known = matches!(
        l.kind.as_str(),
        "FLAT" | "SPARSE" | "VMFS" | "VMFSSPARSE" | "SESPARSE"
    );
    if l.sectors <= 0 || !known {
        return ExtentOutcome::Skipped;
    }
    ExtentOutcome::Opened(l)
}

/// What OpenStack's `VMDKInspector.check_descriptor()` thinks of a descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grammar {
    /// The descriptor is not ASCII.
    pub not_ascii: bool,
    /// The first line that is neither a comment, a `ddb` line, a `key=value` header field
    /// nor an extent line (1-based number, text).
    pub bad_line: Option<(usize, String)>,
    /// Extent lines (first word `rw`, `rdonly` or `noaccess`, any case), as written.
    pub extents: Vec<String>,
}

/// Applies OpenStack's descriptor grammar: the text must be ASCII, and every line (stripped,
/// lower-cased) a comment, blank, `ddb...`, a single-word key followed by `=`, or an extent
/// line. The text ends at the first NUL, as QEMU (`vmdk_parse_extents()` reads a C string)
/// and oslo.utils (`VMDKInspector._parse_descriptor()`) cut it: what follows in the
/// descriptor area (padding, or grain data when the header's descriptor size overstates it)
/// is not descriptor text.
pub fn grammar(region: &[u8]) -> Grammar {
    let region = c_text(region);
    // OpenStack stops at a non-ASCII descriptor; the lines are still classified here, so
    // that the extent rules fire whatever else is wrong.
    let mut g = Grammar {
        not_ascii: !region.is_ascii(),
        ..Grammar::default()
    };
    for (n, raw) in region.split(|&b| b == b'\n').enumerate() {
        let line = raw.trim_ascii();
        let lower = line.to_ascii_lowercase();
        let first_word = lower.split(|&b| b == b' ').next().unwrap_or_default();
        let key = lower.split(|&b| b == b'=').next().unwrap_or_default();
        if lower.is_empty() || lower.starts_with(b"#") || lower.starts_with(b"ddb") {
            continue;
        }
        if lower.contains(&b'=') && !key.contains(&b' ') {
            continue;
        }
        if matches!(first_word, b"rw" | b"rdonly" | b"noaccess") {
            if g.extents.len() < MAX_EXTENTS {
                g.extents.push(String::from_utf8_lossy(line).into_owned());
            }
            continue;
        }
        if g.bad_line.is_none() {
            let shown = &line[..line.len().min(80)];
            g.bad_line = Some((n + 1, String::from_utf8_lossy(shown).into_owned()));
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_FLAT: &[u8] = b"# Disk DescriptorFile\nversion=1\nCID=40df3b38\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 131072 FLAT \"flat-flat.vmdk\" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n";

    fn opened(text: &[u8]) -> Vec<ExtentLine> {
        scan_extents(text)
            .into_iter()
            .filter_map(|o| match o {
                ExtentOutcome::Opened(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_qemu_descriptor_reads_as_qemu_reads_it() {
        assert_eq!(read_cid(QEMU_FLAT, false), Some(0x40df_3b38));
        assert_eq!(read_cid(QEMU_FLAT, true), Some(0xffff_ffff));
        assert_eq!(create_type(QEMU_FLAT).as_deref(), Some("monolithicFlat"));
        assert_eq!(parent_hint(QEMU_FLAT), ParentHint::None);
        let e = opened(QEMU_FLAT);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].sectors, 131_072);
        assert_eq!(e[0].kind, "FLAT");
        assert_eq!(e[0].file, "flat-flat.vmdk");
        assert_eq!(e[0].flat_offset, 0);
        let g = grammar(QEMU_FLAT);
        assert_eq!(g.bad_line, None);
        assert_eq!(g.extents.len(), 1);
    }

    #[test]
    fn a_blank_line_before_an_extent_makes_qemu_read_it_twice() {
        let text = b"createType=\"monolithicFlat\"\n\nRW 100 FLAT \"a\" 0\n";
        assert_eq!(opened(text).len(), 2);
        // A line split across a newline is still one extent to sscanf.
        let text = b"RW 100\n FLAT \"a\" 0\n";
        let e = opened(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].sectors, 100);
    }

    #[test]
    fn extent_rules_follow_vmdk_parse_extents() {
        let one = |s: &[u8]| scan_extents(s);
        assert!(matches!(
            one(b"RW 10 FLAT \"a\"\n")[..],
            [ExtentOutcome::Invalid(_)]
        ));
        assert!(matches!(
            one(b"RW 10 FLAT \"a\" -1\n")[..],
            [ExtentOutcome::Invalid(_)]
        ));
        assert!(matches!(
            one(b"RW 10 SPARSE \"a\" 5\n")[..],
            [ExtentOutcome::Invalid(_)]
        ));
        assert!(matches!(
            one(b"RW 10 VMFS \"a\" 5\n")[..],
            [ExtentOutcome::Invalid(_)]
        ));
        assert!(one(b"RDONLY 10 FLAT \"a\" 0\n").is_empty());
        assert!(one(b"RW 0 FLAT \"a\" 0\n").is_empty());
        assert!(one(b"RW 10 ZERO \"a\"\n").is_empty());
        let e = opened(b"RW 10 VMFS \"a\"\nRW 20 SPARSE \"/etc/passwd\"\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].flat_offset, 0);
        assert_eq!(e[1].file, "/etc/passwd");
        // Invalid stops the scan.
        assert_eq!(
            scan_extents(b"RW 10 FLAT \"a\"\nRW 10 FLAT \"b\" 0\n").len(),
            1
        );
    }

    #[test]
    fn cid_parsing_matches_sscanf() {
        assert_eq!(read_cid(b"CID=0x1f\n", false), Some(0x1f));
        assert_eq!(read_cid(b"CID=  ab\n", false), Some(0xab));
        // glibc keeps the low 32 bits of the unsigned long, which saturates past 64 bits.
        assert_eq!(read_cid(b"CID=123456789abcdef\n", false), Some(0x89ab_cdef));
        assert_eq!(read_cid(b"CID=123456789abcdef01\n", false), Some(u32::MAX));
        assert_eq!(read_cid(b"CID=zz\n", false), None);
        assert_eq!(read_cid(b"nothing", false), None);
        // strstr finds parentCID first when it comes first.
        assert_eq!(read_cid(b"parentCID=5\nCID=7\n", false), Some(5));
        // Text after a NUL is invisible.
        assert_eq!(read_cid(b"\0CID=7\n", false), None);
    }

    #[test]
    fn the_parent_hint_follows_vmdk_parent_open() {
        assert_eq!(
            parent_hint(b"parentFileNameHint=\"base.vmdk\"\n"),
            ParentHint::Name("base.vmdk".into())
        );
        assert_eq!(
            parent_hint(b"parentFileNameHint=\"base"),
            ParentHint::Invalid
        );
        assert_eq!(parent_hint(b"parentFileNameHint"), ParentHint::Invalid);
        let long = format!("parentFileNameHint=\"{}\"", "a".repeat(5000));
        assert_eq!(parent_hint(long.as_bytes()), ParentHint::Invalid);
    }

    #[test]
    fn the_grammar_refuses_unknown_lines_and_non_ascii() {
        let g = grammar(b"# c\nversion=1\nfoo bar\nRW 1 FLAT \"x\" 0\n\0\0");
        assert_eq!(g.bad_line, Some((3, "foo bar".into())));
        assert_eq!(g.extents, ["RW 1 FLAT \"x\" 0"]);
        // Whatever follows the first NUL is not descriptor text.
        let g = grammar(b"version=1\nRW 1 FLAT \"x\" 0\n\0not a field\n\xff\xfe\0");
        assert!(!g.not_ascii && g.bad_line.is_none(), "{:?}", g.bad_line);
        assert_eq!(g.extents.len(), 1);
        let g = grammar("createType=\"é\"\nRW 1 FLAT \"/x\" 0\n".as_bytes());
        assert!(g.not_ascii);
        assert_eq!(g.extents.len(), 1);
        assert!(grammar(b"version=1\n").extents.is_empty());
    }

    #[test]
    fn a_million_blank_lines_scan_in_linear_time() {
        let mut text = vec![b'\n'; 1 << 20];
        text.extend_from_slice(b"RW 5 FLAT \"a\" 0\n");
        let e = opened(&text);
        // QEMU would open the extent once per blank line; the cap stops that.
        assert_eq!(e.len(), MAX_EXTENTS);
        let mut text = b"RW ".to_vec();
        text.extend(vec![b'9'; 1 << 20]);
        assert!(opened(&text).is_empty());
    }
}
