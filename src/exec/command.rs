//! [`Command`]: `std::process::Command`, for a program on a sprite.

use super::child::Child;
use super::io::MessageHandler;
use super::pipes::{Stdio, StdioKind};
use super::status::{ExitStatus, Output};
use crate::error::Error;
use crate::sprite::Sprite;
use crate::types::ServerMessage;
use crate::url::Query;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A program to run on a sprite, configured like [`std::process::Command`].
///
/// Method names, argument types and defaults are std's: [`output`](Self::output) captures stdout
/// and stderr with stdin null; [`status`](Self::status) and [`spawn`](Self::spawn) inherit all
/// three from this process. The program runs directly (no shell), found through the sprite's
/// `PATH`, in the sprite's home directory unless [`current_dir`](Self::current_dir) says
/// otherwise.
///
/// Beside std's methods: [`timeout`](Self::timeout) and [`on_message`](Self::on_message).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
/// let output = sprite.command("sh").arg("-c").arg("echo $GREETING from $(pwd)")
///     .env("GREETING", "hello")
///     .current_dir("/tmp")
///     .output()?;
/// assert_eq!(output.stdout, b"hello from /tmp\n");
/// # Ok(()) }
/// ```
pub struct Command {
    sprite: Sprite,
    program: OsString,
    args: Vec<OsString>,
    /// `Some` = set, `None` = removed; ordered like std's so requests are reproducible.
    env: BTreeMap<OsString, Option<OsString>>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    timeout: Option<Duration>,
    on_message: Option<MessageHandler>,
}

impl Command {
    pub(crate) fn new(sprite: Sprite, program: &OsStr) -> Command {
        Command {
            sprite,
            program: program.to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            current_dir: None,
            stdin: None,
            stdout: None,
            stderr: None,
            timeout: None,
            on_message: None,
        }
    }

    /// Adds an argument.
    pub fn arg<S: AsRef<OsStr>>(&mut self, arg: S) -> &mut Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env<K, V>(&mut self, key: K, val: V) -> &mut Command
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env
            .insert(key.as_ref().to_owned(), Some(val.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, val) in vars {
            self.env(key, val);
        }
        self
    }

    /// Removes a variable from the command's environment, including one the sprite would set.
    ///
    /// The API can only add variables, so removal runs the program through `env -u NAME` on the
    /// sprite (coreutils' `env`, present on any Linux sprite).
    pub fn env_remove<K: AsRef<OsStr>>(&mut self, key: K) -> &mut Command {
        if self.env_clear {
            self.env.remove(key.as_ref());
        } else {
            self.env.insert(key.as_ref().to_owned(), None);
        }
        self
    }

    /// Starts the command with an empty environment plus what [`env`](Self::env) sets.
    ///
    /// Runs the program through `env -i` on the sprite, for the reason given at
    /// [`env_remove`](Self::env_remove).
    pub fn env_clear(&mut self) -> &mut Command {
        self.env.clear();
        self.env_clear = true;
        self
    }

    /// The working directory on the sprite. Relative paths resolve against the sprite's home.
    pub fn current_dir<P: AsRef<Path>>(&mut self, dir: P) -> &mut Command {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Where the command's stdin comes from.
    pub fn stdin<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdin = Some(cfg.into());
        self
    }

    /// Where the command's stdout goes.
    pub fn stdout<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdout = Some(cfg.into());
        self
    }

    /// Where the command's stderr goes.
    pub fn stderr<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stderr = Some(cfg.into());
        self
    }

    /// Kills the remote command if it runs longer than `timeout`; waiting then fails with
    /// [`io::ErrorKind::TimedOut`] (wrapping [`Error::TimedOut`]). The Go SDK's `CommandContext`.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # let sprite = sprites::Client::from_env()?.sprite("s");
    /// use std::time::Duration;
    /// let err = sprite.command("sleep").arg("60").timeout(Duration::from_secs(1)).status().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok(()) }
    /// ```
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        self.timeout = Some(timeout);
        self
    }

    /// Calls `handler` with every text message the server sends (`session_info`, port
    /// notifications, anything unknown), on the connection's reader thread. Keep it quick: output
    /// waits while it runs. To get a channel instead, send from the handler:
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # let sprite = sprites::Client::from_env()?.sprite("s");
    /// use sprites::ServerMessage;
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let mut child = sprite.command("python3").args(["-m", "http.server", "8000"])
    ///     .on_message(move |msg| { let _ = tx.send(msg); })
    ///     .spawn()?;
    /// for msg in rx.iter() {
    ///     if let ServerMessage::PortOpened { port, .. } = msg {
    ///         println!("listening on {port}");
    ///         break;
    ///     }
    /// }
    /// child.kill()?;
    /// # Ok(()) }
    /// ```
    pub fn on_message<F>(&mut self, handler: F) -> &mut Command
    where
        F: FnMut(ServerMessage) + Send + 'static,
    {
        self.on_message = Some(Arc::new(Mutex::new(handler)));
        self
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, without the program.
    pub fn get_args(&self) -> CommandArgs<'_> {
        CommandArgs {
            inner: self.args.iter(),
        }
    }

    /// Explicitly set (`Some`) and removed (`None`) variables, in key order. After
    /// [`env_clear`](Self::env_clear) only the variables set since are listed, as in std.
    pub fn get_envs(&self) -> CommandEnvs<'_> {
        CommandEnvs {
            inner: self.env.iter(),
        }
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.current_dir.as_deref()
    }

    /// Starts the command; stdin, stdout and stderr default to [`Stdio::inherit`].
    ///
    /// Fails with [`io::ErrorKind::NotFound`] when the sprite (or the program) does not exist,
    /// [`io::ErrorKind::PermissionDenied`] for a bad token, and a wrapped [`Error`] otherwise.
    pub fn spawn(&mut self) -> io::Result<Child> {
        self.spawn_with(Stdio::inherit(), Stdio::inherit)
    }

    /// Runs the command to completion, capturing stdout and stderr; stdin defaults to null.
    pub fn output(&mut self) -> io::Result<Output> {
        self.spawn_with(Stdio::null(), Stdio::piped)?
            .wait_with_output()
    }

    /// Runs the command to completion; stdin, stdout and stderr default to inherit.
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        let mut child = self.spawn_with(Stdio::inherit(), Stdio::inherit)?;
        child.wait()
    }

    fn spawn_with(
        &mut self,
        default_stdin: Stdio,
        default_output: fn() -> Stdio,
    ) -> io::Result<Child> {
        // The request first: a command that cannot be expressed must not consume a pipe.
        let configured = self.stdin.as_ref().map_or(&default_stdin.0, |s| &s.0);
        let path = self.exec_path(!matches!(configured, StdioKind::Null))?;
        let stdin = resolve(&mut self.stdin, default_stdin)?;
        let stdout = resolve(&mut self.stdout, default_output())?;
        let stderr = resolve(&mut self.stderr, default_output())?;
        Child::spawn(super::child::Spawn {
            sprite: self.sprite.clone(),
            path,
            stdin,
            stdout,
            stderr,
            timeout: self.timeout,
            on_message: self.on_message.clone(),
        })
    }

    /// `/v1/sprites/{name}/exec?cmd=...` for this command.
    fn exec_path(&self, with_stdin: bool) -> Result<String, Error> {
        let argv = self.argv()?;
        let mut query = Query::new();
        for arg in &argv {
            query.push("cmd", arg);
        }
        query.push("path", &argv[0]);
        if !self.wraps_env() {
            for (key, val) in &self.env {
                if let Some(val) = val {
                    query.push(
                        "env",
                        &format!(
                            "{}={}",
                            utf8(key, "environment variable name")?,
                            utf8(val, "environment value")?
                        ),
                    );
                }
            }
        }
        if let Some(dir) = &self.current_dir {
            query.push("dir", utf8(dir.as_os_str(), "working directory")?);
        }
        query.push("stdin", if with_stdin { "true" } else { "false" });
        Ok(self.sprite.path(&format!("/exec{}", query.as_str())))
    }

    fn wraps_env(&self) -> bool {
        self.env_clear || self.env.values().any(Option::is_none)
    }

    /// argv as sent: the program and arguments, behind `env -i`/`env -u` when variables must go.
    fn argv(&self) -> Result<Vec<String>, Error> {
        let program = utf8(&self.program, "program")?;
        if program.is_empty() {
            return Err(Error::InvalidInput("the program name is empty".into()));
        }
        let mut argv = Vec::new();
        if self.wraps_env() {
            argv.push("env".to_owned());
            if self.env_clear {
                argv.push("-i".to_owned());
            }
            for (key, val) in &self.env {
                if val.is_none() {
                    argv.push("-u".to_owned());
                    argv.push(utf8(key, "environment variable name")?.to_owned());
                }
            }
            for (key, val) in &self.env {
                if let Some(val) = val {
                    let key = utf8(key, "environment variable name")?;
                    if key.is_empty() || key.contains('=') {
                        return Err(Error::InvalidInput(format!(
                            "invalid environment variable name {key:?}"
                        )));
                    }
                    argv.push(format!("{key}={}", utf8(val, "environment value")?));
                }
            }
            // A program name containing '=' would read as an assignment; `env` takes none after "--"
            // in GNU coreutils, so refuse it rather than run something else.
            if program.contains('=') {
                return Err(Error::InvalidInput(
                    "a program name containing '=' cannot be run with env_clear/env_remove".into(),
                ));
            }
        }
        argv.push(program.to_owned());
        for arg in &self.args {
            argv.push(utf8(arg, "argument")?.to_owned());
        }
        Ok(argv)
    }
}

/// The configured stdio for one spawn, or the default for this kind of run.
fn resolve(slot: &mut Option<Stdio>, default: Stdio) -> io::Result<StdioKind> {
    match slot {
        Some(stdio) => stdio.take_for_spawn(),
        None => Ok(default.0),
    }
}

/// The iterator of [`Command::get_args`], like `std::process::CommandArgs`.
#[derive(Debug, Clone)]
pub struct CommandArgs<'a> {
    inner: std::slice::Iter<'a, OsString>,
}

impl<'a> Iterator for CommandArgs<'a> {
    type Item = &'a OsStr;
    fn next(&mut self) -> Option<&'a OsStr> {
        self.inner.next().map(OsString::as_os_str)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for CommandArgs<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
}

impl DoubleEndedIterator for CommandArgs<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(OsString::as_os_str)
    }
}

/// The iterator of [`Command::get_envs`], like `std::process::CommandEnvs`.
#[derive(Debug, Clone)]
pub struct CommandEnvs<'a> {
    inner: std::collections::btree_map::Iter<'a, OsString, Option<OsString>>,
}

impl<'a> Iterator for CommandEnvs<'a> {
    type Item = (&'a OsStr, Option<&'a OsStr>);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for CommandEnvs<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
}

impl DoubleEndedIterator for CommandEnvs<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner
            .next_back()
            .map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }
}

fn utf8<'a>(value: &'a OsStr, what: &str) -> Result<&'a str, Error> {
    value.to_str().ok_or_else(|| {
        Error::InvalidInput(format!(
            "the {what} {value:?} is not valid UTF-8, which the API requires"
        ))
    })
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("sprite", &self.sprite.name())
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("env_clear", &self.env_clear)
            .field("current_dir", &self.current_dir)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::Client;
    use std::ffi::OsStr;

    fn sprite() -> crate::Sprite {
        Client::new("t").unwrap().sprite("box")
    }

    #[test]
    fn exec_path_encodes_argv_env_dir_stdin() {
        let sprite = sprite();
        let mut cmd = sprite.command("sh");
        cmd.args(["-c", "echo a&b"])
            .env("K", "v=1")
            .current_dir("/tmp/x y");
        assert_eq!(
            cmd.exec_path(true).unwrap(),
            "/v1/sprites/box/exec?cmd=sh&cmd=-c&cmd=echo%20a%26b&path=sh&env=K%3Dv%3D1&dir=%2Ftmp%2Fx%20y&stdin=true"
        );
    }

    #[test]
    fn env_remove_and_clear_wrap_in_env() {
        let sprite = sprite();
        let mut cmd = sprite.command("printenv");
        cmd.env("A", "1").env_remove("HOME");
        assert_eq!(
            cmd.argv().unwrap(),
            ["env", "-u", "HOME", "A=1", "printenv"]
        );
        cmd.env_clear().env("B", "2");
        assert_eq!(cmd.argv().unwrap(), ["env", "-i", "B=2", "printenv"]);
    }

    #[test]
    fn get_args_and_get_envs_are_nameable_debug_iterators() {
        let sprite = sprite();
        let mut cmd = sprite.command("ls");
        cmd.args(["-l", "/tmp"]).env("B", "2").env_remove("A");
        let args: super::CommandArgs<'_> = cmd.get_args();
        assert!(format!("{args:?}").contains("-l"));
        assert_eq!(args.len(), 2);
        assert_eq!(args.clone().rev().collect::<Vec<_>>(), ["/tmp", "-l"]);
        assert_eq!(args.collect::<Vec<_>>(), ["-l", "/tmp"]);
        let envs: super::CommandEnvs<'_> = cmd.get_envs();
        assert!(format!("{envs:?}").contains('B'));
        assert_eq!(envs.len(), 2);
        let envs: Vec<_> = envs.collect();
        assert_eq!(
            envs,
            [
                (OsStr::new("A"), None),
                (OsStr::new("B"), Some(OsStr::new("2")))
            ]
        );
        assert_eq!(
            cmd.get_envs().next_back(),
            Some((OsStr::new("B"), Some(OsStr::new("2"))))
        );
        cmd.env_clear().env("C", "3");
        assert_eq!(
            cmd.get_envs().collect::<Vec<_>>(),
            [(OsStr::new("C"), Some(OsStr::new("3")))]
        );
    }

    #[test]
    fn rejects_empty_program_and_non_utf8() {
        let sprite = sprite();
        assert!(sprite.command("").argv().is_err());
        let mut cmd = sprite.command("ls");
        cmd.arg(not_utf8());
        assert!(cmd.argv().is_err());
    }

    #[cfg(unix)]
    fn not_utf8() -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(vec![0xff])
    }

    #[cfg(windows)]
    fn not_utf8() -> std::ffi::OsString {
        use std::os::windows::ffi::OsStringExt;
        // A lone surrogate: valid UTF-16 for Windows, not UTF-8.
        std::ffi::OsString::from_wide(&[0xD800])
    }
}
