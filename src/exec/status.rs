//! [`ExitStatus`] and [`Output`], shaped like their `std::process` namesakes.

use crate::error::Error;
use std::fmt;

/// Signal numbers a status of 128+N stands for: Linux's 1–64 (standard and real-time).
const MAX_SIGNAL: i32 = 64;

/// How a remote command ended, like [`std::process::ExitStatus`] on Unix.
///
/// The API reports one number, 0–255, with a death by signal N folded into 128+N (as a shell
/// reports it). This type unfolds it the way std presents a local command's status: a status
/// of 129–192 is a death by signal 1–64, so [`code`](Self::code) is `None` and
/// [`signal`](Self::signal) is the signal, as `ExitStatusExt::signal` would be. (A program
/// that calls `exit(137)` itself therefore reads as killed by signal 9 — the protocol cannot
/// tell the two apart.)
///
/// `Default` is a successful exit, as std's is.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-status", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// let status = sprite.command("false").status()?;
/// assert!(!status.success());
/// assert_eq!(status.code(), Some(1));
///
/// let mut child = sprite.command("sleep").arg("60").spawn()?;
/// child.kill()?;
/// let status = child.wait()?;
/// assert_eq!((status.code(), status.signal()), (None, Some(9)));
/// assert_eq!(status.to_string(), "signal: 9 (SIGKILL)");
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExitStatus {
    /// The number the server reported.
    reported: i32,
}

impl ExitStatus {
    pub(crate) fn from_code(code: i32) -> ExitStatus {
        ExitStatus { reported: code }
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.reported == 0
    }

    /// The exit code, or `None` if a signal ended the command (see [`signal`](Self::signal)).
    pub fn code(&self) -> Option<i32> {
        match self.signal() {
            Some(_) => None,
            None => Some(self.reported),
        }
    }

    /// The signal that ended the command, if one did: `ExitStatusExt::signal`.
    pub fn signal(&self) -> Option<i32> {
        let signal = self.reported - 128;
        (1..=MAX_SIGNAL).contains(&signal).then_some(signal)
    }

    /// Whether the command dumped core: `ExitStatusExt::core_dumped`. Always `false`, as the
    /// API does not report it.
    pub fn core_dumped(&self) -> bool {
        false
    }

    /// The status as a Unix wait status (`ExitStatusExt::into_raw`): the signal number for a
    /// death by signal, else the exit code shifted left by 8.
    ///
    /// ```
    /// let status = sprites::ExitStatus::from_raw(3 << 8);
    /// assert_eq!((status.code(), status.into_raw()), (Some(3), 3 << 8));
    /// assert_eq!(sprites::ExitStatus::from_raw(15).signal(), Some(15));
    /// ```
    pub fn into_raw(self) -> i32 {
        match self.signal() {
            Some(signal) => signal,
            None => (self.reported & 0xff) << 8,
        }
    }

    /// A status from a Unix wait status (`ExitStatusExt::from_raw`).
    pub fn from_raw(raw: i32) -> ExitStatus {
        let signal = raw & 0x7f;
        if signal == 0 {
            ExitStatus::from_code((raw >> 8) & 0xff)
        } else {
            ExitStatus::from_code(128 + signal)
        }
    }
}

impl fmt::Display for ExitStatus {
    /// As std on Unix: `exit status: 3`, `signal: 9 (SIGKILL)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal() {
            Some(signal) => match signal_name(signal) {
                Some(name) => write!(f, "signal: {signal} ({name})"),
                None => write!(f, "signal: {signal}"),
            },
            None => write!(f, "exit status: {}", self.reported),
        }
    }
}

/// Linux's names for the standard signals.
fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
}

/// What [`Command::output`](crate::Command::output) and
/// [`Child::wait_with_output`](crate::Child::wait_with_output) collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How the command ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// How much of stderr [`exit_ok`](Self::exit_ok)'s error keeps: the end of it, where a
    /// failing program says why.
    pub const STDERR_TAIL: usize = 4096;

    /// The output if the command succeeded, else [`Error::CommandFailed`] carrying the exit
    /// status and the last [`STDERR_TAIL`](Self::STDERR_TAIL) bytes of stderr. A checked run,
    /// like std's unstable `ExitStatus::exit_ok` or duct's default; it converts into an
    /// `io::Error` (kind `Other`) for `?` in functions that return `io::Result`.
    ///
    /// # Errors
    ///
    /// [`Error::CommandFailed`] when the status is not success.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-exit-ok", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let listing = sprite.command("ls").arg("/").output()?.exit_ok()?;
    /// assert!(!listing.stdout.is_empty());
    ///
    /// let err = sprite.command("ls").arg("/no/such/dir").output()?.exit_ok().unwrap_err();
    /// let sprites::Error::CommandFailed { status, stderr_tail } = &err else { unreachable!() };
    /// assert_eq!(status.code(), Some(2));
    /// assert!(stderr_tail.contains("/no/such/dir"), "{stderr_tail}");
    /// assert!(err.to_string().starts_with("exit status: 2; stderr ends with: "), "{err}");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn exit_ok(self) -> Result<Output, Error> {
        if self.status.success() {
            return Ok(self);
        }
        let start = self.stderr.len().saturating_sub(Self::STDERR_TAIL);
        Err(Error::CommandFailed {
            status: self.status,
            stderr_tail: String::from_utf8_lossy(&self.stderr[start..]).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_signals() {
        for (reported, code, signal) in [
            (0, Some(0), None),
            (1, Some(1), None),
            (128, Some(128), None),
            (129, None, Some(1)),
            (137, None, Some(9)),
            (192, None, Some(64)),
            (193, Some(193), None),
            (255, Some(255), None),
            (-1, Some(-1), None),
        ] {
            let status = ExitStatus::from_code(reported);
            assert_eq!(
                (status.code(), status.signal()),
                (code, signal),
                "{reported}"
            );
            assert_eq!(status.success(), reported == 0);
        }
        assert_eq!(ExitStatus::default(), ExitStatus::from_code(0));
        assert!(ExitStatus::default().success());
        assert!(!ExitStatus::from_code(137).core_dumped());
    }

    #[test]
    fn display_like_std() {
        assert_eq!(ExitStatus::from_code(3).to_string(), "exit status: 3");
        assert_eq!(
            ExitStatus::from_code(143).to_string(),
            "signal: 15 (SIGTERM)"
        );
        assert_eq!(ExitStatus::from_code(129).to_string(), "signal: 1 (SIGHUP)");
        assert_eq!(
            ExitStatus::from_code(128 + 31).to_string(),
            "signal: 31 (SIGSYS)"
        );
        assert_eq!(ExitStatus::from_code(128 + 40).to_string(), "signal: 40");
    }

    #[test]
    fn raw_wait_status_round_trips() {
        for reported in [0, 1, 3, 128, 130, 137, 192, 200, 255] {
            let status = ExitStatus::from_code(reported);
            assert_eq!(
                ExitStatus::from_raw(status.into_raw()),
                status,
                "{reported}"
            );
        }
        assert_eq!(ExitStatus::from_code(137).into_raw(), 9);
        assert_eq!(ExitStatus::from_code(2).into_raw(), 512);
        // A stopped or core-dump bit in a raw status does not invent an exit code.
        assert_eq!(ExitStatus::from_raw(0x80 | 11).signal(), Some(11));
    }

    #[test]
    fn exit_ok_keeps_the_tail_of_stderr() {
        let ok = Output {
            status: ExitStatus::from_code(0),
            stdout: b"out".to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(ok.clone().exit_ok().unwrap(), ok);
        let mut stderr = vec![b'a'; Output::STDERR_TAIL];
        stderr.extend_from_slice(b"the reason\n");
        let failed = Output {
            status: ExitStatus::from_code(3),
            stdout: Vec::new(),
            stderr,
        };
        match failed.exit_ok() {
            Err(Error::CommandFailed {
                status,
                stderr_tail,
            }) => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr_tail.len(), Output::STDERR_TAIL);
                assert!(stderr_tail.ends_with("the reason\n"));
                assert!(stderr_tail.starts_with('a'));
            }
            other => panic!("{other:?}"),
        }
        let silent = Output {
            status: ExitStatus::from_code(1),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        assert_eq!(silent.exit_ok().unwrap_err().to_string(), "exit status: 1");
        let io: std::io::Error = Output {
            status: ExitStatus::from_code(137),
            stdout: Vec::new(),
            stderr: b"oom\n".to_vec(),
        }
        .exit_ok()
        .unwrap_err()
        .into();
        assert_eq!(io.kind(), std::io::ErrorKind::Other);
        assert_eq!(io.to_string(), "signal: 9 (SIGKILL); stderr ends with: oom");
    }
}
