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
