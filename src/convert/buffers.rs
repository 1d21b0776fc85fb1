//! Buffers recycled across chunks, batches and threads.
//!
//! A fresh buffer per chunk costs a `memset` as large as the read that then overwrites it, and
//! page faults when the allocator hands it back to the system between uses. A [`PooledBuffer`]
//! returns to its [`BufferPool`] when it is dropped, wherever that happens: on a worker thread
//! after a failed read, or on the writer or a digest thread once the output holds it. That
//! lets a chunk read from the input go to the writer and the digests as it is, without a copy
//! into an output buffer.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// A bounded stock of free buffers; cloning shares the stock.
#[derive(Debug, Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Free buffers kept at most: more in flight are freed when they come back.
    keep: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep` free buffers.
    pub fn new(keep: usize) -> Self {
        Self {
            free: Arc::new(Mutex::new(Vec::new())),
            keep,
        }
    }

    /// A buffer of `len` bytes whose contents are unspecified (left from an earlier use):
    /// callers overwrite all of it.
    pub fn take(&self, len: usize) -> PooledBuffer {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buf.resize(len, 0);
        PooledBuffer {
            buf,
            home: Some(self.clone()),
        }
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A buffer that goes back to its pool when dropped.
#[derive(Debug, Default)]
pub struct PooledBuffer {
    buf: Vec<u8>,
    home: Option<BufferPool>,
}

impl PooledBuffer {
    /// A buffer of no pool: freed when dropped.
    pub fn unpooled(buf: Vec<u8>) -> Self {
        Self { buf, home: None }
    }
}

impl Deref for PooledBuffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_comes_back_with_its_memory() {
        let pool = BufferPool::new(1);
        let first = pool.take(4096);
        let at = first.as_ptr();
        drop(first);
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), at, "the freed buffer was not reused");
        assert_eq!(again.len(), 100);
        assert!(again.capacity() >= 4096);
    }

    #[test]
    fn the_pool_keeps_no_more_than_asked() {
        let pool = BufferPool::new(1);
        let (a, b) = (pool.take(10), pool.take(10));
        drop(a);
        drop(b);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_buffer_dropped_on_another_thread_comes_home() {
        let pool = BufferPool::new(4);
        let buf = pool.take(10);
        std::thread::spawn(move || drop(buf)).join().unwrap();
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }
}
