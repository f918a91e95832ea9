//! Signal names as clients send them (`TERM`, `SIGTERM`, `15`), process-group delivery,
//! and [`TerminationSignal`], the SIGINT/SIGTERM a program stops the server on.

use std::fs::File;
use std::io::{self, Read};

/// Parses a signal name or number: `TERM`, `SIGTERM`, `sigterm`, `15`. Only the signals a
/// client has a reason to send are named; numbers 1..=64 are taken as given.
pub fn parse(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

/// The short name of a signal (`TERM`), or its number as text.
pub fn name(sig: i32) -> String {
    let s = match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGKILL => "KILL",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        libc::SIGCONT => "CONT",
        libc::SIGSTOP => "STOP",
        libc::SIGTSTP => "TSTP",
        libc::SIGWINCH => "WINCH",
        n => return n.to_string(),
    };
    s.to_owned()
}

/// Sends `sig` to process group `pgid`. Errors (the group is gone) are ignored: the
/// caller only wants the group not to be running any more.
pub fn kill_group(pgid: u32, sig: i32) {
    // A pgid of 0 or 1 would signal our own group or everything; never do that.
    if pgid > 1 {
        let _ = crate::sys::process::killpg(pgid as libc::pid_t, sig);
    }
}

/// SIGINT and SIGTERM, caught so that a program embedding the server can shut it down
/// cleanly (this is how the `sprites-local` CLI stops).
///
/// [`install`](Self::install) replaces the default action of both signals (ending the
/// process) with a handler that writes to a pipe; [`wait`](Self::wait) blocks on that
/// pipe. A handler rather than blocking the signals and `sigwait`ing: a blocked signal
/// mask would be inherited by every command the server spawns, while handlers reset to the
/// default action on exec, so sprites' processes see ordinary signal behaviour.
///
/// Install it before starting the server, so a signal that arrives during startup is not
/// lost, and keep it until the end.
///
/// ```no_run
/// use sprites_local::{Server, TerminationSignal};
///
/// let mut signal = TerminationSignal::install()?;
/// let server = Server::builder().start()?;
/// println!("listening on {}", server.url());
/// signal.wait(); // until SIGINT or SIGTERM
/// server.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct TerminationSignal {
    /// Read end of the pipe the handler writes one byte to per signal.
    pipe: File,
}

impl TerminationSignal {
    /// Installs the SIGINT and SIGTERM handlers (process-wide; installing again replaces
    /// the previous one's pipe).
    pub fn install() -> io::Result<TerminationSignal> {
        Ok(TerminationSignal {
            pipe: crate::sys::signal_handler::install_termination_pipe()?,
        })
    }

    /// Blocks until SIGINT or SIGTERM arrives (or reading the pipe fails, which ends the
    /// wait too).
    pub fn wait(&mut self) {
        let mut byte = [0u8; 1];
        loop {
            match self.pipe.read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse("sigint"), Some(libc::SIGINT));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("99"), None);
        assert_eq!(parse("BOGUS"), None);
        assert_eq!(parse(""), None);
        assert_eq!(name(libc::SIGTERM), "TERM");
        assert_eq!(name(40), "40");
    }
}
