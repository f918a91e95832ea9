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
/// Beside std's methods: [`timeout`](Self::timeout), [`on_message`](Self::on_message),
/// [`port_events`](Self::port_events), and for interactive programs [`tty`](Self::tty),
/// [`tty_size`](Self::tty_size) and [`detachable`](Self::detachable).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-1", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// let sprite = client.create_sprite("my-sprite")?;
/// let output = sprite.command("sh").arg("-c").arg("echo $GREETING from $(pwd)")
///     .env("GREETING", "hello")
///     .current_dir("/tmp")
///     .output()?;
/// assert_eq!(output.stdout, b"hello from /tmp\n");
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
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
    tty: bool,
    /// Rows, columns.
    tty_size: Option<(u16, u16)>,
    detachable: bool,
    port_events: bool,
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
            tty: false,
            tty_size: None,
            detachable: false,
            port_events: false,
        }
    }

    /// Adds an argument, as std's `Command::arg`. It reaches the program as is: there is no
    /// shell on the way.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-arg", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("echo").arg("a b").arg("$HOME").output()?;
    /// assert_eq!(out.stdout, b"a b $HOME\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn arg<S: AsRef<OsStr>>(&mut self, arg: S) -> &mut Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments, as std's `Command::args`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-args", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("printf").args(["%s-%s\\n", "left", "right"]).output()?;
    /// assert_eq!(out.stdout, b"left-right\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command, as std's `Command::env`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-env", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("sh").args(["-c", "echo $GREETING"]).env("GREETING", "hi").output()?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn env<K, V>(&mut self, key: K, val: V) -> &mut Command
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env
            .insert(key.as_ref().to_owned(), Some(val.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables, as std's `Command::envs`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-envs", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("sh").args(["-c", "echo $A$B"]).envs([("A", "1"), ("B", "2")]).output()?;
    /// assert_eq!(out.stdout, b"12\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-env_remove", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("sh").args(["-c", "echo ${HOME:-unset}"]).env_remove("HOME").output()?;
    /// assert_eq!(out.stdout, b"unset\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn env_remove<K: AsRef<OsStr>>(&mut self, key: K) -> &mut Command {
        if self.env_clear {
            self.env.remove(key.as_ref());
        } else {
            self.env.insert(key.as_ref().to_owned(), None);
        }
        self
    }

    /// Starts the command with an empty environment plus what [`env`](Self::env) sets afterwards.
    ///
    /// Runs the program through `env -i` on the sprite, for the reason given at
    /// [`env_remove`](Self::env_remove).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-env_clear", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("/usr/bin/env").env_clear().env("ONLY", "1").output()?;
    /// assert_eq!(out.stdout, b"ONLY=1\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn env_clear(&mut self) -> &mut Command {
        self.env.clear();
        self.env_clear = true;
        self
    }

    /// The working directory on the sprite. Relative paths resolve against the sprite's home, the
    /// default. A directory that does not exist makes the spawn fail with `NotFound`, as std's does.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-current_dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("pwd").current_dir("/").output()?;
    /// assert_eq!(out.stdout, b"/\n");
    /// let err = sprite.command("pwd").current_dir("/no/such/dir").output().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn current_dir<P: AsRef<Path>>(&mut self, dir: P) -> &mut Command {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Where the command's stdin comes from: a [`Stdio`], or anything that converts into one (a
    /// local file, another command's stdout; see [`Stdio`]). The default is [`Stdio::inherit`] for
    /// [`spawn`](Self::spawn) and [`status`](Self::status), [`Stdio::null`] for
    /// [`output`](Self::output).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-stdin", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::Write;
    /// use sprites::Stdio;
    /// let mut child = sprite.command("wc").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    /// child.stdin.take().unwrap().write_all(b"12345")?;
    /// assert_eq!(child.wait_with_output()?.stdout, b"5\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn stdin<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdin = Some(cfg.into());
        self
    }

    /// Where the command's stdout goes: a [`Stdio`], or anything that converts into one (a local
    /// file, this process's stderr, another command's stdin; see [`Stdio`]). The default is
    /// [`Stdio::inherit`] for [`spawn`](Self::spawn) and [`status`](Self::status), [`Stdio::piped`]
    /// for [`output`](Self::output).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-stdout", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let log = std::env::temp_dir().join(format!("sprites-doc-stdout-{}.log", std::process::id()));
    /// let status = sprite.command("echo").arg("to a file").stdout(std::fs::File::create(&log)?).status()?;
    /// assert!(status.success());
    /// assert_eq!(std::fs::read_to_string(&log)?, "to a file\n");
    /// # std::fs::remove_file(log)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn stdout<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdout = Some(cfg.into());
        self
    }

    /// Where the command's stderr goes; as [`stdout`](Self::stdout).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-stderr", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::Stdio;
    /// let out = sprite.command("sh").args(["-c", "echo oops >&2"]).stderr(Stdio::null()).output()?;
    /// assert!(out.stderr.is_empty());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn stderr<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stderr = Some(cfg.into());
        self
    }

    /// Kills the remote command if it runs longer than `timeout`; waiting then fails with
    /// [`io::ErrorKind::TimedOut`] (wrapping [`Error::TimedOut`]). The Go SDK's `CommandContext`; an
    /// extra beside std.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-timeout", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// let err = sprite.command("sleep").arg("60").timeout(Duration::from_millis(200)).status().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        self.timeout = Some(timeout);
        self
    }

    /// Calls `handler` with every text message the server sends (`session_info`, port
    /// notifications, anything unknown), on the thread that reads the connection: the
    /// connection's reader thread, or the caller's own when [`output`](Self::output) or
    /// [`status`](Self::status) runs the command on it. Keep it quick: output waits while it
    /// runs. To get a channel instead, send from the handler. An extra beside std.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-on_message", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::ServerMessage;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let out = sprite.command("true").on_message(move |msg| { let _ = tx.send(msg); }).output()?;
    /// assert!(out.status.success());
    /// assert!(matches!(rx.recv()?, ServerMessage::SessionInfo { .. }));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn on_message<F>(&mut self, handler: F) -> &mut Command
    where
        F: FnMut(ServerMessage) + Send + 'static,
    {
        self.on_message = Some(Arc::new(Mutex::new(handler)));
        self
    }

    /// Runs the program in a terminal (a pseudo-terminal on the sprite,
    /// [PROTOCOL.md §6.3](crate::protocol#63-terminal-framing)): what shells, editors and
    /// `top` need, and what makes `test -t 0` true.
    ///
    /// What changes with a terminal:
    ///
    /// - everything the program writes, stdout and stderr, arrives on **stdout** as the
    ///   terminal shows it (with `\r\n` line ends, echoed input, escape sequences); a piped
    ///   stderr reads EOF;
    /// - stdin bytes are keystrokes, sent as they are: `0x03` is Ctrl-C (the terminal sends
    ///   `SIGINT`), `0x04` Ctrl-D; dropping stdin sends nothing;
    /// - the exit status comes from the server's text `exit` report, or, from a server that
    ///   sends none, from the close: code 1000 reads as exit 0, any other code as
    ///   [`Error::ConnectionClosed`](crate::Error::ConnectionClosed) (the status is unknown);
    /// - [`Child::resize`] changes the size; the session is detachable (the server keeps it
    ///   through a disconnect, [`Child::detach`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-tty", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("sh").args(["-c", "test -t 0 && echo terminal; echo err >&2"])
    ///     .tty(true)
    ///     .output()?;
    /// assert_eq!(out.stdout, b"terminal\r\nerr\r\n");
    /// assert!(out.stderr.is_empty());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn tty(&mut self, tty: bool) -> &mut Command {
        self.tty = tty;
        self
    }

    /// The terminal's initial size in character cells, for [`tty`](Self::tty) (without a
    /// terminal it is not sent). Without it the server picks one (sprites-local: 24×80).
    ///
    /// # Errors
    ///
    /// Spawning fails with [`io::ErrorKind::InvalidInput`] for a size of 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-tty_size", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("stty").arg("size").tty(true).tty_size(40, 120).output()?;
    /// assert_eq!(out.stdout, b"40 120\r\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn tty_size(&mut self, rows: u16, cols: u16) -> &mut Command {
        self.tty_size = Some((rows, cols));
        self
    }

    /// Makes the session detachable: the server keeps the command running when the connection
    /// goes ([`Child::detach`], a crash, a network cut), and [`Sprite::attach`](crate::Sprite::attach)
    /// comes back to it, replaying what it printed meanwhile. Terminal sessions are detachable
    /// whatever this says. Its id is [`Child::session_id`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-detachable", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::Read;
    /// use sprites::Stdio;
    /// let child = sprite.command("sh").args(["-c", "echo started; sleep 1; echo done"])
    ///     .detachable(true)
    ///     .stdin(Stdio::null())
    ///     .stdout(Stdio::null())
    ///     .spawn()?;
    /// let id = child.session_id().expect("announced");
    /// child.detach();
    /// let mut again = sprite.attach(&id)?;
    /// let mut out = String::new();
    /// again.stdout.take().unwrap().read_to_string(&mut out)?;
    /// assert_eq!(out, "started\ndone\n"); // the first line from the server's scrollback
    /// assert!(again.wait()?.success());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn detachable(&mut self, detachable: bool) -> &mut Command {
        self.detachable = detachable;
        self
    }

    /// Delivers the server's `port_opened`/`port_closed` messages as typed
    /// [`PortEvent`](crate::PortEvent)s on
    /// [`Child::port_events`] (PROTOCOL.md §6.4). An extra beside std. The events of the whole
    /// sprite, not only of this command, come from [`Sprite::watch_ports`](crate::Sprite::watch_ports).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-port_events", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::{BufRead, BufReader};
    /// use std::time::Duration;
    /// use sprites::{PortEventKind, Stdio};
    /// let listen = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
    ///               print(s.getsockname()[1], flush=True); time.sleep(60)";
    /// let mut web = sprite.command("python3").args(["-c", listen])
    ///     .stdout(Stdio::piped())
    ///     .port_events(true)
    ///     .spawn()?;
    /// let mut line = String::new();
    /// BufReader::new(web.stdout.take().unwrap()).read_line(&mut line)?;
    /// let port: u16 = line.trim().parse()?;
    /// let events = web.port_events().unwrap();
    /// let opened = events.recv_timeout(Duration::from_secs(30))?;
    /// assert_eq!((opened.kind, opened.port), (PortEventKind::Opened, port));
    /// web.kill()?;
    /// # web.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn port_events(&mut self, enable: bool) -> &mut Command {
        self.port_events = enable;
        self
    }

    /// The program, as given.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// assert_eq!(sprite.command("ls").get_program(), "ls");
    /// # Ok(()) }
    /// ```
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, without the program, as std's `Command::get_args`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// let mut cmd = sprite.command("ls");
    /// cmd.args(["-l", "/tmp"]);
    /// assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["-l", "/tmp"]);
    /// # Ok(()) }
    /// ```
    pub fn get_args(&self) -> CommandArgs<'_> {
        CommandArgs {
            inner: self.args.iter(),
        }
    }

    /// Explicitly set (`Some`) and removed (`None`) variables, in key order, as std's
    /// `Command::get_envs`. After [`env_clear`](Self::env_clear) only the variables set since are
    /// listed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// use std::ffi::OsStr;
    /// let mut cmd = sprite.command("ls");
    /// cmd.env("A", "1").env_remove("B");
    /// let envs: Vec<_> = cmd.get_envs().collect();
    /// assert_eq!(envs, [(OsStr::new("A"), Some(OsStr::new("1"))), (OsStr::new("B"), None)]);
    /// # Ok(()) }
    /// ```
    pub fn get_envs(&self) -> CommandEnvs<'_> {
        CommandEnvs {
            inner: self.env.iter(),
        }
    }

    /// The working directory, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// let mut cmd = sprite.command("ls");
    /// assert_eq!(cmd.get_current_dir(), None);
    /// cmd.current_dir("/tmp");
    /// assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/tmp")));
    /// # Ok(()) }
    /// ```
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.current_dir.as_deref()
    }

    /// Starts the command; stdin, stdout and stderr default to [`Stdio::inherit`], as in std.
    ///
    /// On a connection of its own this returns once the server has accepted the command: it is
    /// running. On a warm pooled control connection (PROTOCOL.md §8) it returns as soon as the
    /// request is sent, so that stdin written at once travels with it (one round trip in all):
    /// the command may not have started yet, and a failure to start it (the errors below)
    /// is reported when the child is waited for ([`Child::wait`], [`Command::output`])
    /// instead. Code that must know the command runs before doing something else (such as
    /// restoring a checkpoint) waits for a line of its output, or turns control connections
    /// off ([`ClientBuilder::control_connections`](crate::ClientBuilder::control_connections)).
    ///
    /// # Errors
    ///
    /// Nothing runs when these fail:
    ///
    /// - [`io::ErrorKind::NotFound`]: the sprite, the program or the working directory does not exist;
    /// - [`io::ErrorKind::PermissionDenied`]: the token is wrong, or the program is not executable;
    /// - [`io::ErrorKind::InvalidInput`]: the program, an argument, a variable or the directory is not
    ///   UTF-8 (which the API requires), the program is empty, or a [`Stdio`] is used the wrong way
    ///   round (this process's stdout as a command's stdin, say);
    /// - a transport error ([`Error::Transport`], with its kind: `ConnectionRefused`, `TimedOut`, ...)
    ///   when the server cannot be reached.
    ///
    /// Each wraps a [`sprites::Error`](Error), recoverable with [`Error::from_io`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-spawn", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::Read;
    /// use sprites::Stdio;
    /// let mut child = sprite.command("seq").args(["1", "3"]).stdout(Stdio::piped()).spawn()?;
    /// let mut text = String::new();
    /// child.stdout.take().unwrap().read_to_string(&mut text)?;
    /// assert_eq!(text, "1\n2\n3\n");
    /// assert!(child.wait()?.success());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn spawn(&mut self) -> io::Result<Child> {
        self.spawn_with(Stdio::inherit(), Stdio::inherit)
    }

    /// Runs the command to completion, capturing stdout and stderr; stdin defaults to
    /// [`Stdio::null`], as in std. An unsuccessful exit is not an error here (see
    /// [`Output::exit_ok`](crate::Output::exit_ok)).
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn), then as [`Child::wait`]:
    ///
    /// - [`io::ErrorKind::TimedOut`] ([`Error::TimedOut`]) after a [`timeout`](Self::timeout) kill;
    /// - [`io::ErrorKind::ConnectionReset`] ([`Error::ConnectionClosed`]) when the connection ends
    ///   without an exit status; [`io::ErrorKind::TimedOut`] ([`Error::KeepaliveTimeout`]) when the
    ///   server goes silent past the keepalive limit. Never a made-up success.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-output", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let out = sprite.command("sh").args(["-c", "echo out; echo err >&2; exit 3"]).output()?;
    /// assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    /// assert_eq!(out.status.code(), Some(3));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn output(&mut self) -> io::Result<Output> {
        let spec = self.spec_with(Stdio::null(), Stdio::piped)?;
        // On a warm control connection the whole command runs on this thread.
        match Child::run_inline(spec) {
            Ok(done) => done.map(|done| Output {
                status: done.status,
                stdout: done.stdout,
                stderr: done.stderr,
            }),
            Err(spec) => Child::spawn(*spec)?.wait_with_output(),
        }
    }

    /// Runs the command to completion; stdin, stdout and stderr default to [`Stdio::inherit`], as
    /// in std.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn), then as [`Child::wait`]:
    ///
    /// - [`io::ErrorKind::TimedOut`] ([`Error::TimedOut`]) after a [`timeout`](Self::timeout) kill;
    /// - [`io::ErrorKind::ConnectionReset`] ([`Error::ConnectionClosed`]) when the connection ends
    ///   without an exit status; [`io::ErrorKind::TimedOut`] ([`Error::KeepaliveTimeout`]) when the
    ///   server goes silent past the keepalive limit. Never a made-up success.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-command-status", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let status = sprite.command("test").args(["-d", "/"]).status()?;
    /// assert!(status.success());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        let spec = self.spec_with(Stdio::inherit(), Stdio::inherit)?;
        // With no stdin to forward, on a warm control connection, on this thread.
        match Child::run_inline(spec) {
            Ok(done) => done.map(|done| done.status),
            Err(spec) => Child::spawn(*spec)?.wait(),
        }
    }

    fn spawn_with(
        &mut self,
        default_stdin: Stdio,
        default_output: fn() -> Stdio,
    ) -> io::Result<Child> {
        Child::spawn(self.spec_with(default_stdin, default_output)?)
    }

    /// What a spawn of this command needs, with these defaults for unset stdio.
    fn spec_with(
        &mut self,
        default_stdin: Stdio,
        default_output: fn() -> Stdio,
    ) -> io::Result<super::child::Spawn> {
        // The request first: a command that cannot be expressed must not consume a pipe.
        let configured = self.stdin.as_ref().map_or(&default_stdin.0, |s| &s.0);
        let with_stdin = !matches!(configured, StdioKind::Null);
        let path = self.exec_path(with_stdin)?;
        let args = self.exec_args(with_stdin)?;
        let stdin = resolve(&mut self.stdin, default_stdin)?;
        let stdout = resolve(&mut self.stdout, default_output())?;
        let stderr = resolve(&mut self.stderr, default_output())?;
        Ok(super::child::Spawn {
            sprite: self.sprite.clone(),
            path,
            args,
            stdin,
            stdout,
            stderr,
            timeout: self.timeout,
            on_message: self.on_message.clone(),
            tty: self.tty,
            port_events: self.port_events,
        })
    }

    /// `/v1/sprites/{name}/exec?cmd=...` for this command.
    fn exec_path(&self, with_stdin: bool) -> Result<String, Error> {
        let mut query = Query::new();
        for (key, value) in self.exec_args(with_stdin)? {
            query.push(key, &value);
        }
        Ok(self.sprite.path(&format!("/exec{}", query.as_str())))
    }

    /// The exec request's parameters, in order: the query of a direct exec (§6.1) and the
    /// `args` of an exec over a control connection (§8.2).
    fn exec_args(&self, with_stdin: bool) -> Result<Vec<(&'static str, String)>, Error> {
        let argv = self.argv()?;
        let mut args: Vec<(&'static str, String)> = Vec::new();
        for arg in &argv {
            args.push(("cmd", arg.clone()));
        }
        args.push(("path", argv[0].clone()));
        if !self.wraps_env() {
            for (key, val) in &self.env {
                if let Some(val) = val {
                    args.push((
                        "env",
                        format!(
                            "{}={}",
                            utf8(key, "environment variable name")?,
                            utf8(val, "environment value")?
                        ),
                    ));
                }
            }
        }
        if let Some(dir) = &self.current_dir {
            args.push((
                "dir",
                utf8(dir.as_os_str(), "working directory")?.to_owned(),
            ));
        }
        if self.tty {
            args.push(("tty", "true".into()));
            if let Some((rows, cols)) = self.tty_size {
                super::child::check_size(rows, cols)?;
                args.push(("rows", rows.to_string()));
                args.push(("cols", cols.to_string()));
            }
        }
        if self.detachable {
            args.push(("detachable", "true".into()));
        }
        args.push(("stdin", if with_stdin { "true" } else { "false" }.into()));
        Ok(args)
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
            .field("tty", &self.tty)
            .field("tty_size", &self.tty_size)
            .field("detachable", &self.detachable)
            .field("port_events", &self.port_events)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::Client;
    use std::ffi::OsStr;

    fn sprite() -> crate::Sprite {
        Client::builder()
            .base_url("http://127.0.0.1:1")
            .token("t")
            .build()
            .unwrap()
            .sprite("box")
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
    fn exec_path_asks_for_a_terminal_and_a_detachable_session() {
        let sprite = sprite();
        let mut cmd = sprite.command("bash");
        cmd.tty(true).tty_size(40, 120).detachable(true);
        assert_eq!(
            cmd.exec_path(true).unwrap(),
            "/v1/sprites/box/exec?cmd=bash&path=bash&tty=true&rows=40&cols=120&detachable=true&stdin=true"
        );
        // A size without a terminal is not sent; a terminal without a size leaves it to the
        // server.
        cmd.tty(false).detachable(false);
        assert_eq!(
            cmd.exec_path(false).unwrap(),
            "/v1/sprites/box/exec?cmd=bash&path=bash&stdin=false"
        );
        let mut cmd = sprite.command("sh");
        cmd.tty(true);
        assert_eq!(
            cmd.exec_path(true).unwrap(),
            "/v1/sprites/box/exec?cmd=sh&path=sh&tty=true&stdin=true"
        );
        for (rows, cols) in [(0, 80), (24, 0)] {
            cmd.tty_size(rows, cols);
            assert!(matches!(
                cmd.exec_path(true),
                Err(crate::Error::InvalidInput(_))
            ));
        }
        cmd.tty_size(1, 1);
        assert!(cmd.exec_path(true).is_ok());
    }

    #[test]
    fn debug_shows_the_terminal_settings() {
        let sprite = sprite();
        let mut cmd = sprite.command("top");
        cmd.tty(true)
            .tty_size(40, 120)
            .detachable(true)
            .port_events(true);
        let shown = format!("{cmd:?}");
        for field in [
            "program: \"top\"",
            "tty: true",
            "tty_size: Some((40, 120))",
            "detachable: true",
            "port_events: true",
        ] {
            assert!(shown.contains(field), "{field} not in {shown}");
        }
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
        assert_eq!(args.size_hint(), (2, Some(2)));
        assert_eq!(args.clone().rev().collect::<Vec<_>>(), ["/tmp", "-l"]);
        assert_eq!(args.collect::<Vec<_>>(), ["-l", "/tmp"]);
        let envs: super::CommandEnvs<'_> = cmd.get_envs();
        assert!(format!("{envs:?}").contains('B'));
        assert_eq!(envs.len(), 2);
        assert_eq!(envs.size_hint(), (2, Some(2)));
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
