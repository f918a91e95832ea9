//! An interactive shell on a sprite, like the official CLI's `sprite console`.
//!
//! ```text
//! cargo run --example console -- NAME                 # a new shell (the sprite's bash, else sh)
//! cargo run --example console -- NAME -- top          # another program
//! cargo run --example console -- NAME --attach ID     # back to a session left with Ctrl-\
//! ```
//!
//! The local terminal goes into raw mode, so every key (Ctrl-C, Ctrl-Z, arrows) reaches the
//! remote program, and is restored however the program ends: the session's exit, an error, a
//! panic, or SIGINT/SIGTERM/SIGHUP from outside. Window-size changes are forwarded. **Ctrl-\\**
//! detaches: the session keeps running on the sprite and the program prints how to come back.
//! A signal from outside detaches the same way (exit status 128+N); the session's own exit
//! ends the program with the session's status.
//!
//! With `SPRITES_TOKEN` (and optionally `SPRITES_API_URL`) set it uses that API and an existing
//! sprite; otherwise it starts an embedded `sprites-local` and creates the sprite there (which
//! makes a detached session end with the program, since the server does). Unix only.

#[cfg(not(unix))]
fn main() {
    eprintln!("the console example needs a Unix terminal");
    std::process::exit(2);
}

#[cfg(unix)]
fn main() {
    let code = match unix::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("console: {err}");
            1
        }
    };
    std::process::exit(code);
}

#[cfg(unix)]
mod unix {
    use sprites::{Child, Client, Sprite, Stdio};
    use std::io::{self, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The detach key: Ctrl-\ (what the official CLI uses).
    const DETACH: u8 = 0x1c;
    /// What the output threads write to the wake pipe when the session's output ends.
    const OUTPUT_ENDED: u8 = 0;
    const USAGE: &str = "usage: console NAME [--attach ID] [-- COMMAND [ARG...]]";

    type BoxError = Box<dyn std::error::Error>;

    struct Args {
        sprite: String,
        attach: Option<String>,
        command: Vec<String>,
    }

    fn parse_args() -> Result<Args, BoxError> {
        let mut args = std::env::args().skip(1);
        let mut sprite = None;
        let mut attach = None;
        let mut command = Vec::new();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--attach" => attach = Some(args.next().ok_or(USAGE)?),
                "--" => command.extend(args.by_ref()),
                "-h" | "--help" => return Err(USAGE.into()),
                _ if sprite.is_none() && !arg.starts_with('-') => sprite = Some(arg),
                _ => return Err(format!("unexpected {arg:?}; {USAGE}").into()),
            }
        }
        Ok(Args {
            sprite: sprite.ok_or(USAGE)?,
            attach,
            command,
        })
    }

    /// How the console ended.
    enum End {
        /// The session exited with this status.
        Exited(sprites::ExitStatus),
        /// Ctrl-\: the session goes on.
        Detached,
        /// A signal from outside: the session goes on (terminal sessions are detachable).
        Signalled(i32),
    }

    pub fn run() -> Result<i32, BoxError> {
        let args = parse_args()?;
        let (client, local) = connect()?;
        let sprite = match &local {
            Some(_) => client.get_or_create_sprite(&args.sprite)?,
            None => client.sprite(args.sprite.clone()),
        };
        let wake = WakePipe::install()?;
        let interactive = is_terminal(0);
        let size = if interactive { window_size() } else { None };
        let mut child = match &args.attach {
            Some(id) => {
                let mut child = sprite.attach(id)?;
                if let (true, Some((rows, cols))) = (child.is_tty(), size) {
                    // The session may have been sized for another terminal.
                    child.resize(rows, cols)?;
                }
                child
            }
            None => start(&sprite, &args.command, size)?,
        };
        let id = child.session_id().unwrap_or_default();

        let end = {
            // Raw only once the session is there, so that errors before print normally; the
            // guard restores the terminal when this block ends, however it ends.
            let _raw = if interactive && child.is_tty() {
                Some(RawMode::enter(0)?)
            } else {
                None
            };
            relay(&mut child, &wake)?
        };

        let name = sprite.name();
        let embedded = local.is_some();
        match end {
            End::Exited(status) => Ok(status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(1)),
            End::Detached => {
                child.detach();
                eprintln!("\r\ndetached from session {id}; it goes on.");
                eprintln!("re-attach with: cargo run --example console -- {name} --attach {id}");
                if embedded {
                    eprintln!(
                        "(the embedded sprites-local stops with this program, and the session with it)"
                    );
                }
                Ok(0)
            }
            End::Signalled(signal) => {
                child.detach();
                eprintln!("\r\nconsole: signal {signal}; detached from session {id}.");
                eprintln!("re-attach with: cargo run --example console -- {name} --attach {id}");
                Ok(128 + signal)
            }
        }
    }

    /// A new terminal session: the given command, else the sprite's bash (or sh).
    fn start(sprite: &Sprite, command: &[String], size: Option<(u16, u16)>) -> io::Result<Child> {
        let mut cmd = match command.split_first() {
            Some((program, args)) => {
                let mut cmd = sprite.command(program);
                cmd.args(args);
                cmd
            }
            None => {
                let mut cmd = sprite.command("sh");
                cmd.args([
                    "-c",
                    "command -v bash >/dev/null && exec bash -l || exec sh -l",
                ]);
                cmd
            }
        };
        cmd.tty(true)
            .env(
                "TERM",
                std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some((rows, cols)) = size {
            cmd.tty_size(rows, cols);
        }
        cmd.spawn()
    }

    /// Relays keys to the session and its output here until it exits, the detach key, or a
    /// signal. Waits in poll(2) on the keyboard and the wake pipe: no busy loop.
    fn relay(child: &mut Child, wake: &WakePipe) -> Result<End, BoxError> {
        let mut outputs = 0;
        if let Some(stdout) = child.stdout.take() {
            copy_out(stdout, io::stdout(), wake.writer()?)?;
            outputs += 1;
        }
        if let Some(stderr) = child.stderr.take() {
            copy_out(stderr, io::stderr(), wake.writer()?)?;
            outputs += 1;
        }
        // A duplicate of fd 0 read directly: std's buffered Stdin could hold bytes poll(2)
        // cannot see.
        let mut keyboard = Some(std::fs::File::from(
            std::os::fd::AsFd::as_fd(&io::stdin()).try_clone_to_owned()?,
        ));
        let mut buf = [0u8; 4096];
        loop {
            let ready = poll(keyboard.as_ref().map(|k| k.as_raw_fd()), wake.read_fd())?;
            if ready.wake {
                for byte in wake.drain()? {
                    match i32::from(byte) {
                        0 => {
                            outputs -= 1;
                            if outputs == 0 {
                                return Ok(End::Exited(child.wait()?));
                            }
                        }
                        libc::SIGWINCH => {
                            if let (true, Some((rows, cols))) = (child.is_tty(), window_size()) {
                                child.resize(rows, cols)?;
                            }
                        }
                        signal => return Ok(End::Signalled(signal)),
                    }
                }
            }
            if ready.keyboard
                && let Some(input) = keyboard.as_mut()
            {
                let n = match input.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    // Local input ended (a pipe, not a terminal): end the session's input too
                    // (nothing is sent for a terminal) and wait for its output to end.
                    keyboard = None;
                    drop(child.stdin.take());
                    continue;
                }
                let keys = &buf[..n];
                let (before, detach) = match keys.iter().position(|&b| b == DETACH) {
                    Some(at) => (&keys[..at], true),
                    None => (keys, false),
                };
                if let Some(stdin) = child.stdin.as_mut()
                    && !before.is_empty()
                {
                    // The session may have just ended; its output's end says so next.
                    let _ = stdin.write_all(before);
                }
                if detach {
                    return Ok(End::Detached);
                }
            }
        }
    }

    /// Copies one output stream of the session to a local one on a thread; tells the wake pipe
    /// when it ends.
    fn copy_out(
        mut from: impl Read + Send + 'static,
        mut to: impl Write + Send + 'static,
        mut wake: std::fs::File,
    ) -> io::Result<()> {
        std::thread::Builder::new()
            .name("console-output".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = wake.write_all(&[OUTPUT_ENDED]);
            })?;
        Ok(())
    }

    struct Ready {
        keyboard: bool,
        wake: bool,
    }

    /// Waits (no time limit: a key, a signal or the output's end wakes it) until the keyboard
    /// or the wake pipe is readable.
    fn poll(keyboard: Option<RawFd>, wake: RawFd) -> io::Result<Ready> {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: wake,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    // A negative fd is skipped by poll(2).
                    fd: keyboard.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: a valid array of two pollfds for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            return Ok(Ready {
                wake: fds[0].revents != 0,
                keyboard: fds[1].revents != 0,
            });
        }
    }

    fn is_terminal(fd: RawFd) -> bool {
        // SAFETY: isatty only inspects the descriptor.
        unsafe { libc::isatty(fd) == 1 }
    }

    /// The local terminal's size, rows and columns.
    fn window_size() -> Option<(u16, u16)> {
        [0, 1].into_iter().find_map(|fd| {
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes one winsize into `size`.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
            (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
        })
    }

    /// The terminal settings to put back, for the panic hook (which cannot reach the guard).
    static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

    /// Raw mode on a terminal, restored on drop (and by the panic hook on a panic).
    struct RawMode;

    impl RawMode {
        fn enter(fd: RawFd) -> io::Result<RawMode> {
            let mut original: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: tcgetattr fills one termios.
            if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
                return Err(io::Error::last_os_error());
            }
            *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, original));
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, so the message prints on a sane terminal.
                restore();
                previous(info);
            }));
            let mut raw = original;
            // SAFETY: cfmakeraw edits the termios it is given; tcsetattr reads it.
            unsafe { libc::cfmakeraw(&mut raw) };
            if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
                let err = io::Error::last_os_error();
                restore();
                return Err(err);
            }
            Ok(RawMode)
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            restore();
        }
    }

    /// Puts the saved terminal settings back, once.
    fn restore() {
        if let Some((fd, original)) = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: tcsetattr reads one termios.
            unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &original) };
        }
    }

    /// The write end of the wake pipe, for the signal handler.
    static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

    /// A self-pipe: the signal handler writes the signal's number, output threads write
    /// [`OUTPUT_ENDED`]; the relay loop polls the read end.
    struct WakePipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl WakePipe {
        fn install() -> io::Result<WakePipe> {
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors, owned from here on.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            for fd in [&read, &write] {
                // Never block: neither the handler (a full pipe already says "wake up") nor the
                // drain.
                set_flags(fd.as_raw_fd())?;
            }
            WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
            for signal in [libc::SIGWINCH, libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: a zeroed sigaction with a handler that only calls write(2), which is
                // async-signal-safe.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_signal as *const () as usize;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(WakePipe { read, write })
        }

        fn read_fd(&self) -> RawFd {
            self.read.as_raw_fd()
        }

        fn writer(&self) -> io::Result<std::fs::File> {
            Ok(std::fs::File::from(self.write.try_clone()?))
        }

        /// What was written since the last drain.
        fn drain(&self) -> io::Result<Vec<u8>> {
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: read into a buffer of the length given.
                let n = unsafe { libc::read(self.read_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    n if n > 0 => all.extend_from_slice(&buf[..n as usize]),
                    0 => return Ok(all),
                    _ => {
                        let err = io::Error::last_os_error();
                        return match err.kind() {
                            io::ErrorKind::WouldBlock => Ok(all),
                            io::ErrorKind::Interrupted => continue,
                            _ => Err(err),
                        };
                    }
                }
            }
        }
    }

    impl Drop for WakePipe {
        fn drop(&mut self) {
            // The handler must not write to a descriptor that is closed (or reused) next.
            WAKE_FD.store(-1, Ordering::SeqCst);
        }
    }

    fn set_flags(fd: RawFd) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0
                || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
                || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The signal handler: one byte into the wake pipe, errno left as it was.
    extern "C" fn on_signal(signal: libc::c_int) {
        let saved = errno::get();
        let byte = signal as u8;
        let fd = WAKE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
        errno::set(saved);
    }

    /// errno, which a signal handler must leave as it found it.
    mod errno {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        fn location() -> *mut libc::c_int {
            // SAFETY: returns this thread's errno slot.
            unsafe { libc::__errno_location() }
        }

        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        fn location() -> *mut libc::c_int {
            // SAFETY: returns this thread's errno slot.
            unsafe { libc::__error() }
        }

        #[cfg(not(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd"
        )))]
        fn location() -> *mut libc::c_int {
            std::ptr::null_mut()
        }

        pub fn get() -> libc::c_int {
            let at = location();
            // SAFETY: a valid errno slot, or null where unknown.
            if at.is_null() { 0 } else { unsafe { *at } }
        }

        pub fn set(value: libc::c_int) {
            let at = location();
            if !at.is_null() {
                // SAFETY: this thread's errno slot.
                unsafe { *at = value };
            }
        }
    }

    /// A client from the environment, or an embedded local server and a client for it.
    fn connect() -> Result<(Client, Option<LocalServer>), BoxError> {
        if std::env::var_os("SPRITES_TOKEN").is_some() || std::env::var_os("SPRITE_TOKEN").is_some()
        {
            return Ok((Client::from_env()?, None));
        }
        embedded()
    }

    #[cfg(not(target_os = "linux"))]
    fn embedded() -> Result<(Client, Option<LocalServer>), BoxError> {
        Err("set SPRITES_TOKEN: the embedded sprites-local runs on Linux only".into())
    }

    #[cfg(target_os = "linux")]
    fn embedded() -> Result<(Client, Option<LocalServer>), BoxError> {
        let dir = std::env::temp_dir().join(format!("sprites-console-{}", std::process::id()));
        let server = sprites_local::Server::builder().data_dir(&dir).start()?;
        eprintln!(
            "no SPRITES_TOKEN set: an embedded sprites-local at {}",
            server.url()
        );
        let client = Client::builder()
            .base_url(server.url())
            .token(server.token())
            .build()?;
        Ok((
            client,
            Some(LocalServer {
                server: Some(server),
                dir,
            }),
        ))
    }

    /// Shuts the embedded server down and removes its data when dropped.
    struct LocalServer {
        #[cfg(target_os = "linux")]
        server: Option<sprites_local::ServerHandle>,
        dir: std::path::PathBuf,
    }

    impl Drop for LocalServer {
        fn drop(&mut self) {
            #[cfg(target_os = "linux")]
            if let Some(server) = self.server.take() {
                server.shutdown();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
