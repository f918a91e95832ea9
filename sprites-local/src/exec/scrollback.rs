//! A detachable session's scrollback: its most recent output, up to a byte limit, replayed
//! to every client that attaches (PROTOCOL.md §7.2) before its live output.
//!
//! Output is kept as chunks tagged with their stream (stdout, or stderr for a non-TTY
//! session), in order. Small chunks of the same stream are merged, so a terminal typing
//! one byte at a time costs one byte each rather than one allocation each; the oldest
//! bytes are dropped first, from the front of the oldest chunk, so the limit holds
//! exactly. Cutting a terminal's history mid escape sequence is harmless: terminals
//! resynchronise at the next one.

use std::collections::VecDeque;
use std::sync::Arc;

/// Chunks at most this long take the next chunk of their stream into themselves.
const MERGE_BELOW: usize = 4096;

/// Output kept for replay.
#[derive(Debug)]
pub struct Scrollback {
    chunks: VecDeque<(u8, Vec<u8>)>,
    bytes: usize,
    limit: usize,
}

impl Scrollback {
    /// Empty, keeping at most `limit` bytes (0 keeps nothing).
    pub fn new(limit: usize) -> Scrollback {
        Scrollback {
            chunks: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Appends `data` of stream `stream`, then forgets the oldest bytes beyond the limit.
    pub fn push(&mut self, stream: u8, data: &[u8]) {
        // Only the newest `limit` bytes of `data` could survive.
        let data = &data[data.len().saturating_sub(self.limit)..];
        if data.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some((s, last)) if *s == stream && last.len() < MERGE_BELOW => {
                last.extend_from_slice(data)
            }
            _ => self.chunks.push_back((stream, data.to_vec())),
        }
        self.bytes += data.len();
        while self.bytes > self.limit {
            let excess = self.bytes - self.limit;
            let Some((_, front)) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= excess {
                self.bytes -= front.len();
                self.chunks.pop_front();
            } else {
                front.drain(..excess);
                self.bytes -= excess;
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// A copy of what is held, oldest first, for one attaching client.
    pub fn snapshot(&self) -> Vec<(u8, Arc<[u8]>)> {
        self.chunks
            .iter()
            .map(|(s, data)| (*s, Arc::from(data.as_slice())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(s: &Scrollback) -> Vec<(u8, Vec<u8>)> {
        s.snapshot()
            .into_iter()
            .map(|(id, d)| (id, d.to_vec()))
            .collect()
    }

    #[test]
    fn keeps_the_newest_bytes_up_to_the_limit_exactly() {
        let mut s = Scrollback::new(10);
        s.push(1, b"0123456789");
        assert_eq!(s.len(), 10);
        assert_eq!(flat(&s), [(1, b"0123456789".to_vec())]);
        s.push(1, b"ab");
        assert_eq!(s.len(), 10);
        assert_eq!(flat(&s), [(1, b"23456789ab".to_vec())]);
        // One chunk bigger than the limit keeps its own tail.
        s.push(2, b"ABCDEFGHIJKLMNOP");
        assert_eq!(flat(&s), [(2, b"GHIJKLMNOP".to_vec())]);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn streams_stay_in_order_and_small_chunks_merge() {
        let mut s = Scrollback::new(1 << 20);
        for b in b"hello" {
            s.push(1, &[*b]);
        }
        s.push(2, b"err");
        s.push(1, b"!");
        assert_eq!(
            flat(&s),
            [
                (1, b"hello".to_vec()),
                (2, b"err".to_vec()),
                (1, b"!".to_vec())
            ]
        );
        // A chunk of MERGE_BELOW bytes or more starts a new one for what follows.
        let mut s = Scrollback::new(1 << 20);
        s.push(1, &[b'x'; MERGE_BELOW]);
        s.push(1, b"y");
        assert_eq!(s.snapshot().len(), 2);
        let mut s = Scrollback::new(1 << 20);
        s.push(1, &[b'x'; MERGE_BELOW - 1]);
        s.push(1, b"y");
        assert_eq!(s.snapshot().len(), 1);
        assert_eq!(s.len(), MERGE_BELOW);
    }

    #[test]
    fn dropping_whole_and_partial_chunks() {
        let mut s = Scrollback::new(6);
        s.push(1, b"aaa");
        s.push(2, b"bbb");
        s.push(1, b"c");
        assert_eq!(
            flat(&s),
            [
                (1, b"aa".to_vec()),
                (2, b"bbb".to_vec()),
                (1, b"c".to_vec())
            ]
        );
        s.push(2, b"dddd");
        assert_eq!(
            flat(&s),
            [
                (2, b"b".to_vec()),
                (1, b"c".to_vec()),
                (2, b"dddd".to_vec())
            ]
        );
        assert_eq!(s.len(), 6);
        let mut s = Scrollback::new(0);
        s.push(1, b"nothing kept");
        assert_eq!((s.len(), s.snapshot().len()), (0, 0));
    }
}
