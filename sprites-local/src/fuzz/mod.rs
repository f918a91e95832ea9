//! Property tests over generated inputs ("fuzzing" on stable Rust, in plain `cargo test`):
//! the parsers that read what clients send, each fed [`CASES`] inputs from a deterministic
//! generator, so a failure names its seed and reproduces.
//!
//! Each target mixes valid inputs (checked to round-trip exactly), mutated valid inputs and
//! random bytes, delivered in random-sized pieces (with an occasional `EINTR`), and checks:
//! no panic, every error is the typed one with an expected status or close code, and the
//! reader's buffers stay within their caps whatever the input declares.
//!
//! - [`http`]: request heads (`RequestReader::read_head`, and `parse_head` fed as the
//!   reactor feeds it);
//! - [`body`]: chunked and `Content-Length` bodies (`BodyReader`, `read_bounded`);
//! - [`ws`]: WebSocket client frames (`MessageReader`);
//! - [`paths`]: the filesystem path resolver (`fsops::resolve`).
//!
//! A hand-rolled generator rather than `proptest`: no new dependency, and 100 000 cases per
//! target run in a few seconds in a debug build.

mod body;
mod http;
mod paths;
mod ws;

use std::io::{self, Read};

/// Inputs generated per target.
pub const CASES: u64 = 100_000;

/// SplitMix64: tiny, fast, and good enough to drive test generation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for case `case` of the target named `target` (so cases are independent
    /// and any one can be replayed alone).
    pub fn for_case(target: &str, case: u64) -> Rng {
        let mut seed = 0xcbf2_9ce4_8422_2325u64;
        for b in target.bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let mut r = Rng(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A length that is usually small and now and then large: for sizes of pieces, bodies
    /// and payloads, so both the common and the edge cases get their share.
    pub fn size(&mut self, small: usize, large: usize) -> usize {
        if self.one_in(16) {
            self.below(large + 1)
        } else {
            self.below(small + 1)
        }
    }

    /// `input` with one to three random edits: a byte replaced, inserted or removed, a cut,
    /// or a slice repeated.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..self.range(1, 3) {
            let at = self.below(out.len() + 1);
            match self.below(5) {
                0 if at < out.len() => out[at] = self.next() as u8,
                1 => out.insert(at, *self.pick(b"\r\n:; 0f\x00\xff/")),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 => out.truncate(at),
                _ => {
                    let end = (at + self.range(1, 8)).min(out.len());
                    let slice = out[at..end].to_vec();
                    out.splice(at..at, slice);
                }
            }
        }
        out
    }
}

/// A byte source that hands out its data in pieces of random size (at most `max_piece`),
/// and now and then fails a read with `Interrupted`, as a socket does under signals.
pub struct Pieces {
    data: Vec<u8>,
    pos: usize,
    rng: Rng,
    max_piece: usize,
    /// Reads that returned data or EOF.
    pub reads: usize,
}

impl Pieces {
    /// Serves `data` in pieces of 1 to `max_piece` bytes.
    pub fn new(data: Vec<u8>, rng: &mut Rng, max_piece: usize) -> Pieces {
        Pieces {
            data,
            pos: 0,
            rng: Rng(rng.next()),
            max_piece: max_piece.max(1),
            reads: 0,
        }
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.one_in(32) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        self.reads += 1;
        let piece = self.rng.range(1, self.max_piece);
        let n = piece.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
