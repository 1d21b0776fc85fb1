//! A remote object as a [`ReadAt`] source: positional reads served by ranged GETs of aligned
//! blocks, kept in a small cache, so that the parsers read a remote image as they read a file.
//!
//! - `info` reads the header and, for formats with a footer, the tail: each lies in one block,
//!   so a qcow2 costs the HEAD and one or two GETs whatever its size.
//! - `check` reads the L1, L2 and refcount tables: neighbouring blocks missing from the cache
//!   are fetched by one GET (coalesced), and data clusters are never read.
//! - `convert` reads the guest disk in order: a read that continues the previous one fetches a
//!   larger window ahead, and a read larger than a block bypasses the cache.
//!
//! Memory is bounded by [`CACHE_BLOCKS`] blocks plus the largest single read.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use bytes::Bytes;

use super::failure;
use super::{ObjectVersion, RemoteStore};
use crate::source::ReadAt;

/// Cached blocks are aligned to this size: a qcow2 header and its extensions, and the VHD
/// footer of any image, lie in one.
pub const BLOCK: u64 = 1 << 20;
/// Blocks kept: 4 MiB in all.
pub const CACHE_BLOCKS: usize = 4;

/// The cache: the most recently used blocks, newest last.
#[derive(Debug, Default)]
struct Cache {
    blocks: VecDeque<(u64, Bytes)>,
    /// The block after the last one fetched: a read starting there is sequential.
    next_sequential: Option<u64>,
}

impl Cache {
    fn get(&mut self, index: u64) -> Option<Bytes> {
        let at = self.blocks.iter().position(|(i, _)| *i == index)?;
        let entry = self.blocks.remove(at)?;
        let bytes = entry.1.clone();
        self.blocks.push_back(entry);
        Some(bytes)
    }

    fn put(&mut self, index: u64, bytes: Bytes) {
        self.blocks.retain(|(i, _)| *i != index);
        if self.blocks.len() == CACHE_BLOCKS {
            self.blocks.pop_front();
        }
        self.blocks.push_back((index, bytes));
    }
}

/// A remote object read in place: its store, the version every read must still find, and the
/// block cache.
#[derive(Debug)]
pub struct RemoteFile {
    store: RemoteStore,
    version: ObjectVersion,
    cache: Mutex<Cache>,
}

impl RemoteFile {
    /// The object `store` reaches, as its HEAD describes it now.
    pub fn open(store: RemoteStore) -> Result<Self, crate::Error> {
        let version = store.head()?;
        Ok(Self {
            store,
            version,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The object at `url`, reached with the options of [`super::options`].
    pub fn open_url(url: &str) -> Result<Self, crate::Error> {
        let options = super::options();
        let location = super::RemoteLocation::parse(url, &options)?;
        Self::open(RemoteStore::open(&location, &options)?)
    }

    /// The store.
    pub fn store(&self) -> &RemoteStore {
        &self.store
    }

    /// The version every read is checked against.
    pub fn version(&self) -> &ObjectVersion {
        &self.version
    }

    /// Bytes `start..end` by one ranged GET.
    fn fetch(&self, start: u64, end: u64) -> io::Result<Bytes> {
        self.store
            .read_range(&self.version, start..end)
            .map_err(failure)
    }

    /// Reads `buf.len()` bytes at `offset` (inside the object) through the cache.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = self.version.len();
        let end = offset + buf.len() as u64;
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = first;
        while index <= last {
            let bytes = match cache.get(index) {
                Some(bytes) => bytes,
                None => {
                    // The missing blocks from here, fetched by one GET; a read that continues
                    // the previous fetch reads the whole cache's worth ahead.
                    let mut through = index;
                    while through < last && cache.get(through + 1).is_none() {
                        through += 1;
                    }
                    if cache.next_sequential == Some(index) {
                        through = through.max(index + CACHE_BLOCKS as u64 - 1);
                    }
                    let start = index * BLOCK;
                    let stop = ((through + 1) * BLOCK).min(len);
                    let fetched = self.fetch(start, stop)?;
                    let blocks = (stop - start).div_ceil(BLOCK);
                    for k in 0..blocks {
                        let from = (k * BLOCK) as usize;
                        let to = (((k + 1) * BLOCK) as usize).min(fetched.len());
                        cache.put(index + k, fetched.slice(from..to));
                    }
                    cache.next_sequential = Some(index + blocks);
                    fetched.slice(0..(BLOCK as usize).min(fetched.len()))
                }
            };
            let block_start = index * BLOCK;
            let from = offset.max(block_start);
            let to = end.min(block_start + bytes.len() as u64);
            let dest = &mut buf[(from - offset) as usize..(to - offset) as usize];
            dest.copy_from_slice(
                &bytes[(from - block_start) as usize..(to - block_start) as usize],
            );
            index += 1;
        }
        Ok(())
    }
}

impl ReadAt for RemoteFile {
    fn len(&self) -> u64 {
        self.version.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let avail = self.version.len().saturating_sub(offset);
        let n = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..n];
        if n as u64 > BLOCK {
            // A large read (convert's) goes straight to its own GET: caching it would only
            // evict the metadata blocks.
            let bytes = self.fetch(offset, offset + n as u64)?;
            buf.copy_from_slice(&bytes);
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.next_sequential = Some((offset + n as u64).div_ceil(BLOCK));
        } else {
            self.read_cached(buf, offset)?;
        }
        Ok(n)
    }
}
