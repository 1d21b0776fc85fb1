//! Reading a batch manifest: the items to run, in manifest order.
//!
//! Accepted manifests (issue 19; docs/batch.md):
//! - **JSON Lines**, one item per line: `{"id", "source", "expect", "record"}`. `expect` holds
//!   the fields `verify` compares (`checksum`, `os_hash_algo`, `os_hash_value`, `size`,
//!   `virtual_size`, `disk_format`, `guest_hash`), `record` a service's image record (Glance,
//!   SCP, IMS, as `verify --against` reads it). A line that is itself a listing page
//!   (`{"images": [...]}`, one page of `GET /v2/images` or IMS `GET /v2/cloudimages`) stands for
//!   its images. Read line by line: memory does not grow with the manifest.
//! - **A service listing** as one JSON document (or several pages one after the other):
//!   `{"images": [...]}`; each image is an item whose `record` is the listing's entry. Read whole
//!   (at most [`MAX_DOCUMENT_BYTES`]).
//! - **A GNU or BSD checksum file** (`hex  name`, `SHA512 (name) = hex`, PGP-clearsigned), as
//!   `hash --check` reads it. The lines of one file (an MD5 line and a SHA512 line, as
//!   `vmimage hash` writes them) make one item. A leading `./` is dropped from names, so
//!   `./netboot/mini.iso` is the item `netboot/mini.iso` (Packer #8774's lesson, wave2 §5 row
//!   10). Read whole (at most [`MAX_MANIFEST_LEN`]).
//! - **A directory**: every regular file under it, sorted by path, is an item whose id is its
//!   path relative to the directory. Walked as items are taken, depth first, one directory's
//!   sorted names per level in memory; a subdirectory that cannot be read is an
//!   error item named after it.
//!
//! Where an item's bytes are ([`SourceMap`]): its own `source`; else `--source-template`
//! (`{id}`, `{name}`, `{disk_format}`, `{path}`, `{basename}` replaced); else a file of the
//! source directory (`--source-dir`, by default the manifest's own directory) named after the
//! item. A relative source is relative to the source directory.
//!
//! A line that cannot be read as an item is an item too, [`ItemBody::Malformed`], with the id
//! `line N`, so that it is reported, sharded and merged like any other.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::digest::manifest::{self as sums, MAX_MANIFEST_LEN};
use crate::error::describe_io;

/// The longest JSON Lines line read, in bytes: an image record is a few KiB. Our budget.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The largest whole-document listing read, in bytes (an IMS listing of a thousand images is
/// about 2 MiB). Larger catalogues go in JSON Lines, which is streamed.
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;

/// What `verify` compares, as a manifest item states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// MD5 of the file (32 hex digits).
    pub checksum: Option<String>,
    /// The algorithm of `os_hash_value`.
    pub os_hash_algo: Option<String>,
    /// The digest of the file.
    pub os_hash_value: Option<String>,
    /// The file's length in bytes.
    pub size: Option<u64>,
    /// The guest-visible size in bytes.
    pub virtual_size: Option<u64>,
    /// The disk format (qcow2, raw, vhd, ...).
    pub disk_format: Option<String>,
    /// The guest-content hash, `ALGO:HEX` as `hash --guest` and `verify --guest-hash` spell it.
    pub guest_hash: Option<String>,
}

/// What one item asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Job {
    /// Where the bytes are: a path, or (in a build with remote sources) `s3://` / `https://`.
    pub source: Option<String>,
    /// Expected values, which replace the record's.
    pub expect: Option<Expect>,
    /// The service's image record.
    pub record: Option<Value>,
}

/// An item, or the line that should have been one.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemBody {
    /// A well-formed item (boxed: a malformed line is a mere sentence).
    Job(Box<Job>),
    /// A line that is not an item: the sentence says why.
    Malformed(String),
}

/// One item of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 0-based position among the manifest's items (what `--shard-by slice` deals by).
    pub index: u64,
    /// 1-based line of the manifest the item comes from (for a directory: `index + 1`).
    pub line: u64,
    /// The item's id: what results, shards and `merge` know it by.
    pub id: String,
    /// What to do.
    pub body: ItemBody,
}

/// Why a manifest could not be read at all (a bad line is an item, not this).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// How items without a `source` of their own find one.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// `--source-template`: `{id}`, `{name}`, `{disk_format}`, `{path}`, `{basename}` replaced.
    pub template: Option<String>,
    /// `--source-dir`: where relative sources and named files are; by default the manifest's
    /// directory.
    pub dir: Option<PathBuf>,
}

/// The fields a template can use.
#[derive(Default)]
struct Names<'a> {
    id: &'a str,
    name: Option<&'a str>,
    disk_format: Option<&'a str>,
    path: Option<&'a str>,
}

impl SourceMap {
    fn base(&self, manifest: &Path) -> PathBuf {
        match &self.dir {
            Some(d) => d.clone(),
            None => match manifest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }

    /// The source of an item that states none.
    fn resolve(&self, base: &Path, names: &Names<'_>) -> String {
        if let Some(t) = &self.template {
            let path = names.path.unwrap_or(names.id);
            let basename = path.rsplit('/').next().unwrap_or(path);
            let filled = t
                .replace("{id}", names.id)
                .replace("{name}", names.name.unwrap_or(names.id))
                .replace("{disk_format}", names.disk_format.unwrap_or(""))
                .replace("{path}", path)
                .replace("{basename}", basename);
            return absolute(base, &filled);
        }
        if let Some(p) = names.path {
            return absolute(base, p);
        }
        // A listing's image: the first existing file named after its id or name, with or
        // without its disk format as extension.
        let mut candidates = vec![names.id.to_string()];
        if let Some(f) = names.disk_format {
            candidates.push(format!("{}.{f}", names.id));
        }
        if let Some(n) = names.name {
            candidates.push(n.to_string());
            if let Some(f) = names.disk_format {
                candidates.push(format!("{n}.{f}"));
            }
        }
        candidates
            .iter()
            .filter(|c| is_plain_name(c))
            .map(|c| base.join(c))
            .find(|p| p.is_file())
            .unwrap_or_else(|| base.join(names.id))
            .display()
            .to_string()
    }
}

/// A name that stays inside the source directory.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// `source` made absolute against `base` when it is a relative path (a URL is left alone).
fn absolute(base: &Path, source: &str) -> String {
    if source.contains("://") || Path::new(source).is_absolute() {
        source.to_string()
    } else {
        base.join(source).display().to_string()
    }
}

/// The items of a manifest, in order.
pub struct ManifestReader {
    path: PathBuf,
    base: PathBuf,
    sources: SourceMap,
    inner: Inner,
    pending: VecDeque<Item>,
    next_index: u64,
}

enum Inner {
    /// JSON Lines, read as needed.
    Lines {
        reader: BufReader<File>,
        line: u64,
        first: Option<Vec<u8>>,
    },
    /// A directory, walked as needed.
    Dir(DirWalk),
    /// A manifest read whole.
    Done,
}

/// A directory walked depth first, each directory's entries sorted by name as it is entered:
/// the files come in the order of their sorted relative paths (a path sorts by its components,
/// so `a/x` before `a.txt`), and memory is the names of one directory per level, not the whole
/// tree's.
struct DirWalk {
    root: PathBuf,
    /// Per level: the directory (relative to `root`) and its entries not yet visited.
    levels: Vec<(PathBuf, std::vec::IntoIter<(OsString, bool)>)>,
}

/// What the walk found next.
enum Found {
    File(PathBuf),
    Unreadable(PathBuf, io::Error),
    End,
}

impl DirWalk {
    fn open(root: &Path) -> io::Result<Self> {
        let top = list_directory(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            levels: vec![(PathBuf::new(), top.into_iter())],
        })
    }

    fn next(&mut self) -> Found {
        loop {
            let Some((dir, entries)) = self.levels.last_mut() else {
                return Found::End;
            };
            let Some((name, is_dir)) = entries.next() else {
                self.levels.pop();
                continue;
            };
            let rel = dir.join(name);
            if !is_dir {
                return Found::File(rel);
            }
            match list_directory(&self.root.join(&rel)) {
                Ok(list) => self.levels.push((rel, list.into_iter())),
                Err(e) => return Found::Unreadable(rel, e),
            }
        }
    }
}

/// The subdirectories (`true`) and regular files of `dir`, sorted by name (bytes). The
/// entry's type comes with the listing; only a symbolic link costs a stat (to the file it
/// names; links to directories are not followed).
fn list_directory(dir: &Path) -> io::Result<Vec<(OsString, bool)>> {
    let mut list = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list.push((entry.file_name(), true));
        } else if kind.is_file()
            || (kind.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()))
        {
            list.push((entry.file_name(), false));
        }
    }
    list.sort_unstable();
    Ok(list)
}

/// One JSON Lines item as written.
#[derive(Deserialize)]
struct LineItem {
    id: Option<String>,
    source: Option<String>,
    expect: Option<Expect>,
    record: Option<Value>,
}

impl ManifestReader {
    /// Opens `path` and decides what kind of manifest it is.
    pub fn open(path: &Path, sources: SourceMap) -> Result<Self, ManifestError> {
        let fail = |message: String| ManifestError {
            path: path.to_path_buf(),
            message,
        };
        let io_fail = |e: io::Error| fail(format!("cannot read the manifest: {}", describe_io(&e)));
        let base = sources.base(path);
        let mut reader = ManifestReader {
            path: path.to_path_buf(),
            base,
            sources,
            inner: Inner::Done,
            pending: VecDeque::new(),
            next_index: 0,
        };
        let meta = std::fs::metadata(path).map_err(io_fail)?;
        if meta.is_dir() {
            if reader.sources.dir.is_none() {
                reader.base = path.to_path_buf();
            }
            reader.inner = Inner::Dir(DirWalk::open(path).map_err(io_fail)?);
            return Ok(reader);
        }
        let mut file = BufReader::new(File::open(path).map_err(io_fail)?);
        let mut first = Vec::new();
        let mut line = 0;
        // The first line that is not blank decides: JSON or a checksum file.
        loop {
            first.clear();
            let n = read_line(&mut file, &mut first).map_err(io_fail)?;
            if n == 0 {
                return Ok(reader);
            }
            line += 1;
            if !trim(&first).is_empty() {
                break;
            }
        }
        let text = trim(&first);
        if !text.starts_with(b"{") {
            let mut all = first.clone();
            (&mut file)
                .take(MAX_MANIFEST_LEN)
                .read_to_end(&mut all)
                .map_err(io_fail)?;
            reader.read_sums(&all, line - 1);
            return Ok(reader);
        }
        if first.len() <= MAX_LINE_BYTES && serde_json::from_slice::<Value>(text).is_ok() {
            reader.inner = Inner::Lines {
                reader: file,
                line: line - 1,
                first: Some(first),
            };
            return Ok(reader);
        }
        // A document over several lines, or one long line: a listing, read whole from the
        // start. If it is not one, the file is JSON Lines whose first line is malformed.
        drop(file);
        let mut all = Vec::new();
        File::open(path)
            .map_err(io_fail)?
            .take(MAX_DOCUMENT_BYTES + 1)
            .read_to_end(&mut all)
            .map_err(io_fail)?;
        if all.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(fail(format!(
                "is larger than {} MiB, too large for a listing document; write one item per line (JSON Lines) instead",
                MAX_DOCUMENT_BYTES >> 20
            )));
        }
        // An over-long first line is a listing on one line, or a JSON Lines item too long.
        let listings_only = first.len() > MAX_LINE_BYTES;
        if reader.read_documents(&all, line, listings_only).is_err() {
            reader.pending.clear();
            reader.next_index = 0;
            drop(all);
            reader.inner = Inner::Lines {
                reader: BufReader::new(File::open(path).map_err(io_fail)?),
                line: 0,
                first: None,
            };
        }
        Ok(reader)
    }

    fn push(&mut self, line: u64, id: String, body: ItemBody) {
        let index = self.next_index;
        self.next_index += 1;
        self.pending.push_back(Item {
            index,
            line,
            id,
            body,
        });
    }

    fn malformed(&mut self, line: u64, message: String) {
        let message = format!("{}: line {line}: {message}", self.path.display());
        self.push(line, format!("line {line}"), ItemBody::Malformed(message));
    }

    /// Takes the directory walk's next file (or unreadable subdirectory) into `pending`; false
    /// at the end.
    fn read_next_file(&mut self) -> bool {
        let Inner::Dir(walk) = &mut self.inner else {
            return false;
        };
        let found = walk.next();
        let line = self.next_index + 1;
        match found {
            Found::End => {
                self.inner = Inner::Done;
                false
            }
            Found::Unreadable(rel, e) => {
                let Inner::Dir(walk) = &self.inner else {
                    return false;
                };
                let message = format!(
                    "{}: cannot read the directory: {}",
                    walk.root.join(&rel).display(),
                    describe_io(&e)
                );
                let id = rel.to_string_lossy().into_owned();
                self.push(line, id, ItemBody::Malformed(message));
                true
            }
            Found::File(rel) => {
                let id = rel.to_string_lossy().into_owned();
                let source = self.sources.resolve(
                    &self.base,
                    &Names {
                        id: &id,
                        path: Some(&id),
                        ..Names::default()
                    },
                );
                self.push(
                    line,
                    id,
                    ItemBody::Job(Box::new(Job {
                        source: Some(source),
                        ..Job::default()
                    })),
                );
                true
            }
        }
    }

    /// A checksum file; `skipped` blank lines came before `text`.
    fn read_sums(&mut self, text: &[u8], skipped: u64) {
        let parsed = sums::parse(text, &[], false);
        // The lines of one file, next to each other, make one item.
        let mut current: Option<(u64, String, Expect)> = None;
        let flush = |reader: &mut Self, current: &mut Option<(u64, String, Expect)>| {
            if let Some((line, id, expect)) = current.take() {
                let source = reader.sources.resolve(
                    &reader.base,
                    &Names {
                        id: &id,
                        path: Some(&id),
                        ..Names::default()
                    },
                );
                reader.push(
                    line,
                    id,
                    ItemBody::Job(Box::new(Job {
                        source: Some(source),
                        expect: Some(expect),
                        record: None,
                    })),
                );
            }
        };
        for l in parsed.lines {
            match l {
                sums::Line::Improper(n) => {
                    flush(self, &mut current);
                    self.malformed(
                        n as u64 + skipped,
                        "not a checksum line (GNU `HEX  NAME` or BSD `ALGO (NAME) = HEX`)".into(),
                    );
                }
                sums::Line::Entry(e) => {
                    let name = String::from_utf8_lossy(&e.file);
                    let id = strip_dot_slash(&name).to_string();
                    let hex = hex::encode(&e.expected);
                    if current.as_ref().is_some_and(|(_, cur, _)| *cur != id) {
                        flush(self, &mut current);
                    }
                    let entry = current.get_or_insert_with(|| {
                        (e.line as u64 + skipped, id.clone(), Expect::default())
                    });
                    if e.algorithm == crate::digest::Algorithm::Md5 {
                        entry.2.checksum = Some(hex);
                    } else {
                        entry.2.os_hash_algo = Some(e.algorithm.name().to_string());
                        entry.2.os_hash_value = Some(hex);
                    }
                }
            }
        }
        flush(self, &mut current);
    }

    /// One or more whole JSON documents, each a listing or an item.
    fn read_documents(
        &mut self,
        text: &[u8],
        first_line: u64,
        listings_only: bool,
    ) -> Result<(), ManifestError> {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        let stream = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
        for doc in stream {
            match doc {
                Ok(v) if listings_only && v.get("images").is_none() => {
                    return Err(ManifestError {
                        path: self.path.clone(),
                        message: "is not a listing".into(),
                    });
                }
                Ok(v) => self.take_value(first_line, v),
                Err(e) => {
                    return Err(ManifestError {
                        path: self.path.clone(),
                        message: format!(
                            "is not JSON Lines, a listing {{\"images\": [...]}} nor a checksum file ({e})"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// One JSON value of the manifest, from `line`.
    fn take_value(&mut self, line: u64, v: Value) {
        let Value::Object(obj) = v else {
            self.malformed(line, "not a JSON object".into());
            return;
        };
        if let Some(images) = obj.get("images") {
            let Value::Array(images) = images else {
                self.malformed(line, "\"images\" is not an array".into());
                return;
            };
            for image in images {
                self.take_record(line, image.clone());
            }
            return;
        }
        let is_item = ["source", "expect", "record"]
            .iter()
            .any(|k| obj.contains_key(*k));
        if !is_item {
            // A bare image record, one per line.
            self.take_record(line, Value::Object(obj));
            return;
        }
        let item: LineItem = match serde_json::from_value(Value::Object(obj)) {
            Ok(i) => i,
            Err(e) => {
                self.malformed(line, format!("not a manifest item ({e})"));
                return;
            }
        };
        let record_text = |key: &str| {
            item.record
                .as_ref()
                .and_then(|r| r.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let Some(id) = item
            .id
            .clone()
            .or_else(|| record_text("id"))
            .or_else(|| item.source.clone())
        else {
            self.malformed(
                line,
                "the item has no id, no record id and no source".into(),
            );
            return;
        };
        let source = match &item.source {
            Some(s) => absolute(&self.base, s),
            None => {
                let name = record_text("name");
                let format = record_text("disk_format");
                self.sources.resolve(
                    &self.base,
                    &Names {
                        id: &id,
                        name: name.as_deref(),
                        disk_format: format.as_deref(),
                        path: None,
                    },
                )
            }
        };
        self.push(
            line,
            id,
            ItemBody::Job(Box::new(Job {
                source: Some(source),
                expect: item.expect,
                record: item.record,
            })),
        );
    }

    /// An image record of a listing: the item's id is its `id` (else its `name`).
    fn take_record(&mut self, line: u64, record: Value) {
        let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_string);
        let Some(id) = text("id").or_else(|| text("name")) else {
            self.malformed(line, "a listed image has neither id nor name".into());
            return;
        };
        let name = text("name");
        let format = text("disk_format");
        let source = self.sources.resolve(
            &self.base,
            &Names {
                id: &id,
                name: name.as_deref(),
                disk_format: format.as_deref(),
                path: None,
            },
        );
        self.push(
            line,
            id,
            ItemBody::Job(Box::new(Job {
                source: Some(source),
                expect: None,
                record: Some(record),
            })),
        );
    }

    /// Reads the next JSON Lines line into `pending`; false at the end.
    fn read_next_line(&mut self) -> bool {
        let Inner::Lines {
            reader,
            line,
            first,
        } = &mut self.inner
        else {
            return false;
        };
        let mut buf = match first.take() {
            Some(b) => b,
            None => {
                let mut buf = Vec::new();
                match read_line(reader, &mut buf) {
                    Ok(0) => {
                        self.inner = Inner::Done;
                        return false;
                    }
                    Ok(_) => buf,
                    Err(e) => {
                        *line += 1;
                        let n = *line;
                        self.inner = Inner::Done;
                        self.malformed(n, format!("cannot read it: {}", describe_io(&e)));
                        return true;
                    }
                }
            }
        };
        *line += 1;
        let n = *line;
        if buf.len() > MAX_LINE_BYTES {
            self.malformed(
                n,
                format!(
                    "longer than {} MiB, too long for an item",
                    MAX_LINE_BYTES >> 20
                ),
            );
            return true;
        }
        let text = trim(&buf);
        if text.is_empty() || text.starts_with(b"#") {
            return true;
        }
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => self.take_value(n, v),
            Err(e) => self.malformed(n, format!("not JSON ({e})")),
        }
        buf.clear();
        true
    }
}

impl Iterator for ManifestReader {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let more = match self.inner {
                Inner::Dir(_) => self.read_next_file(),
                _ => self.read_next_line(),
            };
            if !more {
                return None;
            }
        }
    }
}

/// Reads one line (with its `\n`) into `buf`, keeping at most [`MAX_LINE_BYTES`] + 1 bytes of
/// it: the rest of an over-long line is read and dropped. Returns the bytes consumed.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        reader.consume(n);
        consumed += n;
        if done {
            return Ok(consumed);
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let b = b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b);
    b.trim_ascii()
}

/// `./netboot/mini.iso` is `netboot/mini.iso`.
fn strip_dot_slash(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest.trim_start_matches('/');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(name: &str, text: &str, sources: SourceMap) -> Vec<Item> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        ManifestReader::open(&path, sources).unwrap().collect()
    }

    fn job(item: &Item) -> &Job {
        match &item.body {
            ItemBody::Job(j) => j,
            ItemBody::Malformed(m) => panic!("{} is malformed: {m}", item.id),
        }
    }

    #[test]
    fn json_lines_with_a_malformed_line_keep_their_order_and_indexes() {
        let text = "{\"id\": \"a\", \"source\": \"/x/a.qcow2\", \"expect\": {\"size\": 3}}\n\n{not json\n{\"source\": \"s3://b/c.raw\"}\n";
        let v = items("m.jsonl", text, SourceMap::default());
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].index, v[0].line, v[0].id.as_str()), (0, 1, "a"));
        assert_eq!(job(&v[0]).expect.as_ref().unwrap().size, Some(3));
        assert_eq!((v[1].index, v[1].line, v[1].id.as_str()), (1, 3, "line 3"));
        assert!(matches!(&v[1].body, ItemBody::Malformed(m) if m.contains("line 3: not JSON")));
        assert_eq!(v[2].id, "s3://b/c.raw");
        assert_eq!(job(&v[2]).source.as_deref(), Some("s3://b/c.raw"));
    }

    #[test]
    fn an_unknown_expect_field_is_a_malformed_line() {
        let v = items(
            "m.jsonl",
            "{\"id\": \"a\", \"source\": \"a\", \"expect\": {\"sha512\": \"00\"}}\n",
            SourceMap::default(),
        );
        assert!(matches!(&v[0].body, ItemBody::Malformed(m) if m.contains("sha512")));
    }

    #[test]
    fn a_listing_document_maps_images_through_the_template() {
        let text = "{\n \"images\": [\n  {\"id\": \"i-1\", \"name\": \"one\", \"disk_format\": \"qcow2\", \"__os_type\": \"Linux\"},\n  {\"id\": \"i-2\", \"name\": \"two\", \"disk_format\": \"raw\", \"__os_type\": \"Linux\"}\n ]\n}\n";
        let v = items(
            "listing.json",
            text,
            SourceMap {
                template: Some("s3://bucket/{name}.{disk_format}".into()),
                dir: None,
            },
        );
        let got: Vec<_> = v
            .iter()
            .map(|i| (i.id.as_str(), job(i).source.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("i-1", "s3://bucket/one.qcow2".to_string()),
                ("i-2", "s3://bucket/two.raw".to_string())
            ]
        );
        assert!(job(&v[0]).record.is_some());
    }

    #[test]
    fn a_distro_sums_file_drops_dot_slash_and_joins_an_images_lines() {
        let md5 = "0".repeat(32);
        let sha = "a".repeat(128);
        let text = format!(
            "{sha}  ./netboot/mini.iso\nMD5 (./SHA512SUMS.gpg) = {md5}\nSHA512 (./SHA512SUMS.gpg) = {sha}\ngarbage\n"
        );
        let v = items(
            "SHA512SUMS",
            &text,
            SourceMap {
                template: None,
                dir: Some("/mirror".into()),
            },
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].id, "netboot/mini.iso");
        assert_eq!(
            job(&v[0]).source.as_deref(),
            Some("/mirror/netboot/mini.iso")
        );
        let e = job(&v[0]).expect.clone().unwrap();
        assert_eq!(e.os_hash_algo.as_deref(), Some("sha512"));
        assert_eq!(v[1].id, "SHA512SUMS.gpg");
        let e = job(&v[1]).expect.clone().unwrap();
        assert_eq!(e.checksum.as_deref(), Some(md5.as_str()));
        assert_eq!(e.os_hash_value.as_deref(), Some(sha.as_str()));
        assert_eq!(v[2].id, "line 4");
        let flat = items(
            "SHA512SUMS",
            &text,
            SourceMap {
                template: Some("/flat/{basename}".into()),
                dir: None,
            },
        );
        assert_eq!(job(&flat[0]).source.as_deref(), Some("/flat/mini.iso"));
    }

    #[test]
    fn a_directory_lists_its_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for n in ["b", "a", "sub/c"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        let v: Vec<_> = ManifestReader::open(dir.path(), SourceMap::default())
            .unwrap()
            .collect();
        let ids: Vec<_> = v.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "sub/c"]);
        assert_eq!(
            job(&v[2]).source.as_deref(),
            Some(dir.path().join("sub/c").to_str().unwrap())
        );
    }

    #[test]
    fn a_directory_is_walked_in_path_order_as_items_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "b/deep"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        for n in ["a.txt", "a/x", "b/deep/y", "b/z", "c"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        let mut reader = ManifestReader::open(dir.path(), SourceMap::default()).unwrap();
        let first = reader.next().unwrap();
        assert_eq!((first.id.as_str(), first.index, first.line), ("a/x", 0, 1));
        // A file added to a directory not entered yet is seen: nothing below the top was
        // listed ahead of need.
        std::fs::write(dir.path().join("b/deep/w"), "w").unwrap();
        let rest: Vec<_> = reader.map(|i| (i.id, i.index)).collect();
        assert_eq!(
            rest,
            [
                ("a.txt".to_string(), 1),
                ("b/deep/w".to_string(), 2),
                ("b/deep/y".to_string(), 3),
                ("b/z".to_string(), 4),
                ("c".to_string(), 5)
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_one_malformed_item_and_reading_goes_on() {
        let text = format!(
            "{{\"id\": \"{}\"}}\n{{\"id\": \"b\", \"source\": \"b\"}}\n",
            "x".repeat(MAX_LINE_BYTES + 10)
        );
        let v = items("m.jsonl", &text, SourceMap::default());
        assert_eq!(
            v.len(),
            2,
            "{:?}",
            v.iter().map(|i| &i.id).collect::<Vec<_>>()
        );
        assert!(
            v[0].id == "line 1",
            "the first id is {} bytes",
            v[0].id.len()
        );
        assert_eq!(v[1].id, "b");
    }
}
