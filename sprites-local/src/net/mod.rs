//! The network layer: HTTP/1.1 on a byte stream, WebSocket framing, query strings and
//! the bearer check. Nothing here knows routes, sprites or runtimes.
//!
//! - [`http`]: request heads and buffered bodies, response writing;
//! - [`body`]: a request body streamed in constant memory;
//! - [`file`](mod@file): `Range` parsing and `sendfile(2)` responses;
//! - [`ws`]: WebSocket accept key, frame encoding, the client frame reader;
//! - [`query`]: query-string and path percent-decoding;
//! - [`auth`]: the bearer-token check (constant time).

pub mod auth;
pub mod body;
pub mod file;
pub mod http;
pub mod query;
pub mod ws;

/// A block of zeros to grow buffers from.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Appends `n` zero bytes to `v` (room that a read then fills). Copies from a static block
/// of zeros, which is one `memcpy` per 64 KiB in any build, where `Vec::resize` writes
/// them one by one in an unoptimised one (and made the tests slow).
pub(crate) fn extend_zeroed(v: &mut Vec<u8>, mut n: usize) {
    v.reserve(n);
    while n > 0 {
        let step = n.min(ZEROS.len());
        v.extend_from_slice(&ZEROS[..step]);
        n -= step;
    }
}
