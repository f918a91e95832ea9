//! The server's handle on every live exec or attach connection, so shutdown can close each
//! with 1001 ("going away") before it cuts them: clients then get a reason rather than a
//! connection that just ends.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::state::State;

/// How to end one connection cleanly at shutdown.
#[derive(Clone)]
pub struct ExecControl {
    going_away: Arc<dyn Fn() + Send + Sync>,
    closed: Receiver<()>,
}

impl ExecControl {
    /// `going_away` asks the connection's writer to send close 1001 and stop; `closed`
    /// yields (or disconnects) once that close frame is out or the writer has ended.
    pub fn new(going_away: impl Fn() + Send + Sync + 'static, closed: Receiver<()>) -> Self {
        ExecControl {
            going_away: Arc::new(going_away),
            closed,
        }
    }

    /// Asks the connection's writer to send close 1001 ("going away") and stop writing.
    pub fn going_away(&self) {
        (self.going_away)()
    }

    /// Waits until the close frame is out (or the writer ended), at most until `deadline`.
    pub fn wait_closed(&self, deadline: Instant) {
        let _ = self.closed.recv_deadline(deadline);
    }
}

/// A connection's registration with the server, from before its writer can say anything
/// to the client until the connection ends (dropping it unregisters).
pub struct Registered<'a> {
    state: &'a State,
    id: u64,
}

impl<'a> Registered<'a> {
    /// Registers `control` with `state`.
    pub fn new(state: &'a State, control: ExecControl) -> Registered<'a> {
        let id = state.add_exec(control);
        Registered { state, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.remove_exec(self.id);
    }
}
