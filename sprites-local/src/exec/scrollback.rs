//! A detachable session's scrollback: its most recent output, up to a byte limit, replayed
//! to every client that attaches (PROTOCOL.md §7.2) before its live output.
//!
//! Output is kept as chunks tagged with their stream (stdout, or stderr for a non-TTY
//! session), in order. A big chunk is the very allocation the attached clients are sent
//! (shared, not copied); small chunks of the same stream are merged into a buffer of their
//! own, so a terminal typing one byte at a time costs one byte each rather than one
//! allocation each. The oldest bytes are dropped first, from the front of the oldest chunk
//! (a shared chunk just starts later), so the limit holds exactly; what is held beyond it is
//! at most the dropped front of one shared chunk. Cutting a terminal's history mid escape
//! sequence is harmless: terminals resynchronise at the next one.

use std::collections::VecDeque;
use std::sync::Arc;

/// Chunks shorter than this are merged into a buffer (while that is shorter than this too)
/// rather than kept as they came.
const MERGE_BELOW: usize = 4096;

/// Output kept for replay.
#[derive(Debug)]
pub struct Scrollback {
    chunks: VecDeque<(u8, Piece)>,
    bytes: usize,
    limit: usize,
}

/// One kept chunk.
#[derive(Debug)]
enum Piece {
    /// An output chunk as it was published; the bytes before `start` are dropped.
    Shared { data: Arc<[u8]>, start: usize },
    /// Small chunks, merged.
    Merged(Vec<u8>),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Shared { data, start } => &data[*start..],
            Piece::Merged(data) => data,
        }
    }

    /// Drops the first `n` bytes (fewer than it holds).
    fn drop_front(&mut self, n: usize) {
        match self {
            Piece::Shared { start, .. } => *start += n,
            Piece::Merged(data) => drop(data.drain(..n)),
        }
    }
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

    /// Appends `chunk` of stream `stream`, then forgets the oldest bytes beyond the limit.
    pub fn push(&mut self, stream: u8, chunk: &Arc<[u8]>) {
        // Only the newest `limit` bytes of it could survive.
        let start = chunk.len().saturating_sub(self.limit);
        let data = &chunk[start..];
        if data.is_empty() {
            return;
        }
        match self.chunks.back_mut() {
            Some((s, Piece::Merged(last)))
                if *s == stream && last.len() < MERGE_BELOW && data.len() < MERGE_BELOW =>
            {
                last.extend_from_slice(data)
            }
            _ if data.len() < MERGE_BELOW => self
                .chunks
                .push_back((stream, Piece::Merged(data.to_vec()))),
            _ => self.chunks.push_back((
                stream,
                Piece::Shared {
                    data: chunk.clone(),
                    start,
                },
            )),
        }
        self.bytes += data.len();
        while self.bytes > self.limit {
            let excess = self.bytes - self.limit;
            let Some((_, front)) = self.chunks.front_mut() else {
                break;
            };
            let len = front.bytes().len();
            if len <= excess {
                self.bytes -= len;
                self.chunks.pop_front();
            } else {
                front.drop_front(excess);
                self.bytes -= excess;
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// What is held, oldest first, for one attaching client: whole shared chunks are shared
    /// again, the rest copied.
    pub fn snapshot(&self) -> Vec<(u8, Arc<[u8]>)> {
        self.chunks
            .iter()
            .map(|(s, piece)| match piece {
                Piece::Shared { data, start: 0 } => (*s, data.clone()),
                other => (*s, Arc::from(other.bytes())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(s: &mut Scrollback, stream: u8, data: &[u8]) {
        s.push(stream, &Arc::from(data));
    }

    fn flat(s: &Scrollback) -> Vec<(u8, Vec<u8>)> {
        s.snapshot()
            .into_iter()
            .map(|(id, d)| (id, d.to_vec()))
            .collect()
    }

    #[test]
    fn keeps_the_newest_bytes_up_to_the_limit_exactly() {
        let mut s = Scrollback::new(10);
        push(&mut s, 1, b"0123456789");
        assert_eq!(s.len(), 10);
        assert_eq!(flat(&s), [(1, b"0123456789".to_vec())]);
        push(&mut s, 1, b"ab");
        assert_eq!(s.len(), 10);
        assert_eq!(flat(&s), [(1, b"23456789ab".to_vec())]);
        // One chunk bigger than the limit keeps its own tail.
        push(&mut s, 2, b"ABCDEFGHIJKLMNOP");
        assert_eq!(flat(&s), [(2, b"GHIJKLMNOP".to_vec())]);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn streams_stay_in_order_and_small_chunks_merge() {
        let mut s = Scrollback::new(1 << 20);
        for b in b"hello" {
            push(&mut s, 1, &[*b]);
        }
        push(&mut s, 2, b"err");
        push(&mut s, 1, b"!");
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
        push(&mut s, 1, &[b'x'; MERGE_BELOW]);
        push(&mut s, 1, b"y");
        assert_eq!(s.snapshot().len(), 2);
        let mut s = Scrollback::new(1 << 20);
        push(&mut s, 1, &[b'x'; MERGE_BELOW - 1]);
        push(&mut s, 1, b"y");
        assert_eq!(s.snapshot().len(), 1);
        assert_eq!(s.len(), MERGE_BELOW);
        // That buffer is full now: the next small chunk starts another.
        push(&mut s, 1, b"z");
        assert_eq!(s.snapshot().len(), 2);
        // A chunk of MERGE_BELOW bytes is kept as it came, not merged into a small buffer.
        let whole: Arc<[u8]> = Arc::from(vec![b'w'; MERGE_BELOW]);
        s.push(1, &whole);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 3);
        assert!(Arc::ptr_eq(&snap[2].1, &whole));
    }

    #[test]
    fn dropping_whole_and_partial_chunks() {
        let mut s = Scrollback::new(6);
        push(&mut s, 1, b"aaa");
        push(&mut s, 2, b"bbb");
        push(&mut s, 1, b"c");
        assert_eq!(
            flat(&s),
            [
                (1, b"aa".to_vec()),
                (2, b"bbb".to_vec()),
                (1, b"c".to_vec())
            ]
        );
        push(&mut s, 2, b"dddd");
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
        push(&mut s, 1, b"nothing kept");
        assert_eq!((s.len(), s.snapshot().len()), (0, 0));
    }

    #[test]
    fn big_chunks_are_shared_and_trimmed_without_copies() {
        let mut s = Scrollback::new(3 * MERGE_BELOW);
        let a: Arc<[u8]> = Arc::from(vec![b'a'; MERGE_BELOW]);
        let b: Arc<[u8]> = Arc::from(vec![b'b'; 2 * MERGE_BELOW]);
        s.push(1, &a);
        s.push(2, &b);
        let snap = s.snapshot();
        assert!(Arc::ptr_eq(&snap[0].1, &a) && Arc::ptr_eq(&snap[1].1, &b));
        // One byte over the limit: the oldest chunk starts a byte later.
        push(&mut s, 1, b"c");
        assert_eq!(s.len(), 3 * MERGE_BELOW);
        assert!(Arc::ptr_eq(&s.snapshot()[1].1, &b));
        assert_eq!(
            flat(&s),
            [
                (1, vec![b'a'; MERGE_BELOW - 1]),
                (2, vec![b'b'; 2 * MERGE_BELOW]),
                (1, b"c".to_vec())
            ]
        );
        // A chunk longer than the limit replaces everything with its own tail.
        let big: Arc<[u8]> = (0..4 * MERGE_BELOW).map(|i| i as u8).collect();
        s.push(1, &big);
        assert_eq!(flat(&s), [(1, big[MERGE_BELOW..].to_vec())]);
        assert_eq!(s.len(), 3 * MERGE_BELOW);
    }
}
