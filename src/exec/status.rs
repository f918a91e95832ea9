//! [`ExitStatus`] and [`Output`], shaped like their `std::process` namesakes.

use std::fmt;

/// How a remote command ended: its exit code, 0–255.
///
/// By convention 128+N means "killed by signal N" (137 for SIGKILL); the API reports only the
/// number, so that is all this holds.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let sprite = sprites::Client::new("t")?.sprite("s");
/// # if false {
/// let status = sprite.command("false").status()?;
/// assert!(!status.success());
/// assert_eq!(status.code(), Some(1));
/// # }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    code: i32,
}

impl ExitStatus {
    pub(crate) fn from_code(code: i32) -> ExitStatus {
        ExitStatus { code }
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The exit code. Always `Some` (std returns `None` for signal deaths; the API folds those
    /// into 128+N), kept as an `Option` so code written for std compiles unchanged.
    pub fn code(&self) -> Option<i32> {
        Some(self.code)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status: {}", self.code)
    }
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
