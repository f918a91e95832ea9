//! The thread behind the client's WebSocket watch streams ([`PortWatch`](crate::PortWatch),
//! [`FsWatch`](crate::FsWatch)): it reads the server's messages, hands what they mean to a
//! bounded channel (so a caller that falls behind holds the server back rather than growing
//! a queue), pings while the server is quiet, gives up on silence past the keepalive limit,
//! and insists on the stream's first confirming message (a snapshot, a subscription) within
//! [`SESSION_INFO_WAIT`].
//!
//! Each stream supplies a [`Decoder`]: what its text messages mean and when it counts as
//! confirmed. Everything else — the loop, the bounds, how the connection ends — is here once.

use crate::error::{Error, TransportError};
use crate::exec::io::{Keepalive, SESSION_INFO_WAIT, close_reason, closed_error};
use crate::ws::{Incoming, Socket};
use std::sync::Arc;
use std::time::Instant;
use tungstenite::{Bytes, Message};

/// What a watch stream's text messages mean.
pub(crate) trait Decoder {
    /// What the stream delivers.
    type Item;

    /// Still waiting for the message that confirms the stream (its deadline applies).
    fn unconfirmed(&self) -> bool;

    /// The error when the confirming message is late.
    fn late(&self) -> Error;

    /// Handles one text message, delivering what it means through `deliver` (which returns
    /// false once the caller dropped the stream). `Ok(false)`: stop, the caller is gone.
    fn text(
        &mut self,
        text: &str,
        deliver: &mut dyn FnMut(Self::Item) -> bool,
    ) -> Result<bool, Error>;
}

/// Runs a watch stream on `socket` until it ends, then closes the connection: with 1000
/// after a normal end (the server's close 1000, or a dropped stream), cut otherwise.
/// Returns why it ended (`None`: normally).
pub(crate) fn run<D: Decoder>(
    socket: &Arc<Socket>,
    keepalive: Keepalive,
    decoder: &mut D,
    mut deliver: impl FnMut(D::Item) -> bool,
) -> Option<Error> {
    let end = watch(socket, keepalive, decoder, &mut deliver);
    if end.is_some() {
        socket.shutdown();
    } else {
        socket.close_now(1000);
    }
    end
}

fn watch<D: Decoder>(
    socket: &Socket,
    keepalive: Keepalive,
    decoder: &mut D,
    deliver: &mut dyn FnMut(D::Item) -> bool,
) -> Option<Error> {
    let confirm_by = Instant::now() + SESSION_INFO_WAIT;
    let mut last_heard = Instant::now();
    let mut next_ping = Instant::now() + keepalive.interval;
    loop {
        if decoder.unconfirmed() && Instant::now() >= confirm_by {
            return Some(decoder.late());
        }
        match socket.read() {
            Ok(Incoming::Message(message)) => {
                last_heard = Instant::now();
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(frame) => return close_reason(frame),
                    // Binary frames mean nothing here; pings are answered by the WebSocket
                    // layer.
                    _ => continue,
                };
                match decoder.text(text.as_str(), deliver) {
                    Ok(true) => {}
                    Ok(false) => return None, // the stream was dropped
                    Err(err) => return Some(err),
                }
            }
            Ok(Incoming::Empty) => {
                let now = Instant::now();
                if now.saturating_duration_since(last_heard) >= keepalive.limit {
                    return Some(Error::KeepaliveTimeout(keepalive.limit));
                }
                if now >= next_ping {
                    next_ping = now + keepalive.interval;
                    if let Err(err) = socket.send(Message::Ping(Bytes::new())) {
                        return Some(closed_error(err));
                    }
                }
                let mut wake = (last_heard + keepalive.limit).min(next_ping);
                if decoder.unconfirmed() {
                    wake = wake.min(confirm_by);
                }
                if let Err(err) =
                    socket.wait_readable(wake.saturating_duration_since(Instant::now()))
                {
                    return Some(TransportError::io("waiting for the server", err).into());
                }
            }
            Err(err) => return Some(closed_error(err)),
        }
    }
}
