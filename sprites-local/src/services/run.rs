//! Starting, supervising and stopping service processes.
//!
//! A started service has a *supervisor* thread: it waits for the process, and after a
//! crash (a non-zero exit or death by signal while the service should run) waits out a
//! backoff and starts it again, counting restarts. An output thread copies the process's
//! stdout and stderr into the service's [`Logs`] and to a *logger* thread, which appends
//! them to `/.sprite/logs/services/<name>.log` inside the sprite through a writer process
//! started in the sprite (`cat >> log`): the file is written with the sprite's own
//! identity and view, so no symlink in the sprite can make the server write a host path.
//! When the log reaches [`LOG_CAP`] it is rotated once (`<name>.log.1`, replaced at the
//! next rotation), so a service's logs take at most twice that.
//!
//! So a running service costs three server threads; [`super::def::MAX_SERVICES`] bounds
//! them per sprite.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::def::ServiceDef;
use super::logs::{Event, Logs, Stream};
use super::{SpriteServices, Status};
use crate::lock;
use crate::runtime::{ExecProcess, ProcessSpec, SpawnError};

/// A log file is rotated when it reaches this size.
pub const LOG_CAP: u64 = 1 << 20;
/// Output chunks queued for the logger.
const LOG_QUEUE: usize = 64;
/// How long output waits for room in the logger's queue before it is dropped from the file
/// (never from memory or the event streams).
const LOG_SEND_WAIT: Duration = Duration::from_secs(1);
/// First restart delay; doubled per consecutive crash up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long before crashing starts the backoff afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long output is still read after a service's process has exited (what remains in its
/// pipes; a process that escaped the group and still writes is then no longer followed).
const OUTPUT_LINGER: Duration = Duration::from_secs(1);
/// How long to wait for a process to die after KILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The delay before restart number `n` (1-based) of a run of crashes.
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Starts service `name` of `sp` (if it is not already running or waiting to restart)
/// with the sprite environment `env`: its first process is started before this returns.
/// `Err` = it could not be started (it is then retried with backoff, as after a crash).
pub fn launch(
    sp: &Arc<SpriteServices>,
    name: &str,
    env: Vec<(String, String)>,
) -> Result<(), String> {
    let (def, gen, logs) = {
        let mut svcs = lock(&sp.svcs);
        if sp.removed.load(Ordering::SeqCst) || sp.shutting_down.load(Ordering::SeqCst) {
            return Err("the sprite is going away".into());
        }
        let Some(svc) = svcs.get_mut(name) else {
            return Err(format!("no service {name:?}"));
        };
        if svc.active {
            return Ok(());
        }
        svc.gen += 1;
        svc.active = true;
        svc.status = Status::Starting;
        svc.next_restart_at = None;
        svc.error.clear();
        (svc.def.clone(), svc.gen, svc.logs.clone())
    };
    let (tx, rx) = crossbeam_channel::bounded(LOG_QUEUE);
    {
        let sp = sp.clone();
        let name = name.to_owned();
        // Without a logger the file misses this run's output; the service still runs.
        let _ = thread::Builder::new()
            .name("svc-log".into())
            .spawn(move || logger(&sp, &name, rx));
    }
    let mut sup = Supervisor {
        sp: sp.clone(),
        name: name.to_owned(),
        gen,
        env,
        def,
        logs,
        tx,
        exited: None,
    };
    let first = sup.start_process();
    let result = first.as_ref().map(|_| ()).map_err(Clone::clone);
    let spawned = thread::Builder::new()
        .name("svc-supervisor".into())
        .spawn(move || sup.run(first));
    if let Err(e) = spawned {
        // The closure (and the process in it) was dropped; make sure it is gone.
        let mut svcs = lock(&sp.svcs);
        if let Some(svc) = svcs.get_mut(name).filter(|s| s.gen == gen) {
            if let Some((_, g)) = svc.group.take() {
                g.signal(libc::SIGKILL);
            }
            svc.active = false;
            svc.status = Status::Failed;
            svc.error = format!("cannot start a supervisor thread: {e}");
        }
        return Err(format!("cannot start a supervisor thread: {e}"));
    }
    result
}

struct Supervisor {
    sp: Arc<SpriteServices>,
    name: String,
    gen: u64,
    env: Vec<(String, String)>,
    def: ServiceDef,
    logs: Arc<Logs>,
    tx: Sender<Vec<u8>>,
    /// Written when the current process has exited (read by its output thread).
    exited: Option<Arc<OwnedFd>>,
}

impl Supervisor {
    /// Starts one process and records it (`running`), or records why not (`failed`).
    fn start_process(&mut self) -> Result<Box<dyn ExecProcess>, String> {
        let def = &self.def;
        let mut argv = vec![def.cmd.clone()];
        argv.extend(def.args.iter().cloned());
        let mut env = self.env.clone();
        env.extend(def.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = ProcessSpec {
            program: &def.cmd,
            argv: &argv,
            env: &env,
            dir: def.dir.as_deref(),
            stdin: false,
            tty: None,
            end_group_with_leader: true,
        };
        let spawned = self.sp.runtime.spawn(&self.sp.dir, &spec);
        let mut svcs = lock(&self.sp.svcs);
        let current = svcs.get_mut(&self.name).filter(|s| s.gen == self.gen);
        let mut process = match spawned {
            Ok(s) => s.process,
            Err(e) => {
                let msg = match e {
                    SpawnError::InvalidDirectory(m) => m,
                    SpawnError::Io(e) if e.kind() == ErrorKind::NotFound => {
                        format!("{}: command not found", def.cmd)
                    }
                    SpawnError::Io(e) => format!("cannot start {}: {e}", def.cmd),
                };
                if let Some(svc) = current {
                    svc.status = Status::Failed;
                    svc.error = msg.clone();
                    svc.pid = None;
                }
                self.logs.event(Event::with_data("error", msg.clone()));
                return Err(msg);
            }
        };
        let group = process.group();
        let Some(svc) = current else {
            // Stopped while starting: this process must not live.
            group.signal(libc::SIGKILL);
            return Ok(process);
        };
        // Before the readers start: no output may precede `started` in a stream.
        self.logs.event(Event::new("started"));
        let stdio = process.take_stdio();
        // One output thread reads both pipes; the supervisor tells it (through `exited`)
        // when the process is gone, after which it reads for at most OUTPUT_LINGER more:
        // a daemon that escaped the process group and holds the pipes cannot keep the
        // thread forever.
        let exited = match crate::sys::fd::eventfd() {
            Ok(fd) => Some(Arc::new(fd)),
            Err(_) => None,
        };
        let spawned = exited.clone().and_then(|exited| {
            let logs = self.logs.clone();
            let tx = self.tx.clone();
            let (out, err) = (stdio.stdout, stdio.stderr);
            thread::Builder::new()
                .name("svc-output".into())
                .spawn(move || pump_output(out, err, &exited, &logs, &tx))
                .ok()
        });
        if spawned.is_none() {
            // Nobody would read its output: the pipes would fill and the service hang.
            group.signal(libc::SIGKILL);
        }
        self.exited = exited;
        svc.status = Status::Running;
        svc.pid = Some(process.id());
        svc.started_at = Some(crate::time::now_rfc3339());
        svc.error.clear();
        svc.group = Some((process.id(), group));
        svc.live_pid = Some(process.id());
        self.sp.cv.notify_all();
        Ok(process)
    }

    fn run(mut self, first: Result<Box<dyn ExecProcess>, String>) {
        let mut next = Some(first);
        let mut crashes = 0u32;
        while let Some(attempt) = next.take() {
            let started = Instant::now();
            let code = match attempt {
                Ok(mut process) => Some(self.wait(&mut *process)),
                Err(_) => None,
            };
            if started.elapsed() >= BACKOFF_RESET {
                crashes = 0;
            }
            let deadline = {
                let mut svcs = lock(&self.sp.svcs);
                let Some(svc) = svcs.get_mut(&self.name).filter(|s| s.gen == self.gen) else {
                    break;
                };
                svc.pid = None;
                let clean = code == Some(0);
                let going = self.sp.shutting_down.load(Ordering::SeqCst)
                    || self.sp.removed.load(Ordering::SeqCst);
                if clean || going || !svc.want_running {
                    svc.status = Status::Stopped;
                    svc.active = false;
                    self.sp.cv.notify_all();
                    break;
                }
                crashes += 1;
                svc.restart_count += 1;
                let delay = backoff(crashes);
                svc.status = Status::Failed;
                if let Some(c) = code {
                    svc.error = format!("exited with code {c}");
                }
                svc.next_restart_at = Some(crate::time::format_rfc3339(SystemTime::now() + delay));
                Instant::now() + delay
            };
            if !self.wait_for_restart(deadline) {
                break;
            }
            next = Some(self.start_process());
        }
    }

    /// Waits for the process to exit; returns its exit code (128 + N after signal N).
    fn wait(&self, process: &mut dyn ExecProcess) -> i32 {
        let pid = process.id();
        let sp = &self.sp;
        let code = process.wait(&mut || {
            // The leader exited, and the runtime KILLed what it left behind in its group
            // (`end_group_with_leader`): the group is forgotten, so a stop can never signal
            // a recycled pgid.
            let mut svcs = lock(&sp.svcs);
            for svc in svcs.values_mut() {
                if svc.group.as_ref().is_some_and(|(p, _)| *p == pid) {
                    svc.group = None;
                }
            }
            sp.cv.notify_all();
        });
        let code = i32::from(code);
        if let Some(exited) = &self.exited {
            let _ = crate::sys::fd::write(exited.as_fd(), &1u64.to_ne_bytes());
        }
        self.logs.event(Event::exit(code));
        let mut svcs = lock(&sp.svcs);
        for svc in svcs.values_mut() {
            if svc.live_pid == Some(pid) {
                svc.live_pid = None;
            }
        }
        sp.cv.notify_all();
        code
    }

    /// Sleeps until `deadline` unless the service is stopped meanwhile; true = restart now.
    fn wait_for_restart(&mut self, deadline: Instant) -> bool {
        let mut svcs = lock(&self.sp.svcs);
        loop {
            let current = svcs.get(&self.name).is_some_and(|s| s.gen == self.gen);
            if !current
                || self.sp.shutting_down.load(Ordering::SeqCst)
                || self.sp.removed.load(Ordering::SeqCst)
            {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                if let Some(svc) = svcs.get_mut(&self.name) {
                    svc.next_restart_at = None;
                    svc.status = Status::Starting;
                    self.def = svc.def.clone();
                }
                return true;
            }
            svcs = self
                .sp
                .cv
                .wait_timeout(svcs, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Copies a process's stdout and stderr into its logs and to the logger until both end, or
/// until [`OUTPUT_LINGER`] after `exited` fires.
fn pump_output(
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    exited: &OwnedFd,
    logs: &Logs,
    tx: &Sender<Vec<u8>>,
) {
    let mut pipes = [(Stream::Out, stdout), (Stream::Err, stderr)];
    let mut buf = vec![0u8; 16 * 1024];
    let mut deadline: Option<Instant> = None;
    let mut stalled = false;
    loop {
        let live: Vec<usize> = (0..2).filter(|&i| pipes[i].1.is_some()).collect();
        if live.is_empty() {
            return;
        }
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut fds: Vec<libc::pollfd> = live
            .iter()
            .map(|&i| libc::pollfd {
                fd: pipes[i].1.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: if deadline.is_none() {
                exited.as_raw_fd()
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        });
        match crate::sys::fd::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if fds[live.len()].revents != 0 {
            deadline = Some(Instant::now() + OUTPUT_LINGER);
        }
        for (slot, &i) in live.iter().enumerate() {
            if fds[slot].revents == 0 {
                continue;
            }
            let (stream, fd) = &mut pipes[i];
            let n = match fd
                .as_ref()
                .map(|f| crate::sys::fd::read(f.as_fd(), &mut buf))
            {
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
                _ => 0,
            };
            if n == 0 {
                *fd = None;
                continue;
            }
            logs.output(*stream, &buf[..n]);
            // Backpressure while the logger rotates or starts its writer. A writer stuck for
            // longer (a sprite can freeze it) costs the file what comes until its queue has
            // room again, but never slows the service down after that first wait.
            let chunk = buf[..n].to_vec();
            if stalled {
                stalled = tx.try_send(chunk).is_err();
            } else {
                stalled = tx.send_timeout(chunk, LOG_SEND_WAIT).is_err();
            }
        }
    }
}

/// Appends what `rx` brings to the service's log inside the sprite, rotating at
/// [`LOG_CAP`]; ends when every reader of the run has ended.
fn logger(sp: &SpriteServices, name: &str, rx: Receiver<Vec<u8>>) {
    let mut writer: Option<(Box<dyn ExecProcess>, File)> = None;
    let mut written = 0u64;
    let mut broken = false;
    for chunk in rx {
        if writer.is_none() && !broken {
            writer = open_writer(sp, name);
            // One failed attempt per run: a sprite without `sh` gets no file, not a loop.
            broken = writer.is_none();
            written = 0;
        }
        let Some((_, stdin)) = writer.as_mut() else {
            continue;
        };
        if stdin.write_all(&chunk).is_err() {
            close_writer(writer.take());
            broken = true;
            continue;
        }
        written += chunk.len() as u64;
        if written >= LOG_CAP {
            close_writer(writer.take());
        }
    }
    close_writer(writer);
}

/// Starts `sh -c '… exec cat >> log'` in the sprite, rotating a log already at the cap.
fn open_writer(sp: &SpriteServices, name: &str) -> Option<(Box<dyn ExecProcess>, File)> {
    let script = "d=$1; f=$d/$2.log; mkdir -p \"$d\" 2>/dev/null; \
                  if [ -f \"$f\" ] && [ \"$(wc -c < \"$f\")\" -ge \"$3\" ]; then mv -f \"$f\" \"$f.1\"; fi; \
                  exec cat >> \"$f\"";
    let argv: Vec<String> = [
        "sh",
        "-c",
        script,
        "sh",
        &sp.log_dir,
        name,
        &LOG_CAP.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let spec = ProcessSpec {
        program: "sh",
        argv: &argv,
        env: &[],
        dir: None,
        stdin: true,
        tty: None,
        end_group_with_leader: false,
    };
    let mut process = sp.runtime.spawn(&sp.dir, &spec).ok()?.process;
    let stdio = process.take_stdio();
    match stdio.stdin {
        Some(stdin) => Some((process, stdin)),
        None => {
            process.group().signal(libc::SIGKILL);
            process.wait(&mut || {});
            None
        }
    }
}

/// Ends a writer: EOF on its stdin, then waits for it (`cat` exits at EOF).
fn close_writer(writer: Option<(Box<dyn ExecProcess>, File)>) {
    if let Some((mut process, stdin)) = writer {
        drop(stdin);
        process.wait(&mut || {});
    }
}

/// Why a stop could not be done.
#[derive(Debug, PartialEq, Eq)]
pub enum StopError {
    /// No such service.
    NotFound,
    /// It is not running (nor waiting to restart).
    NotRunning,
}

/// Stops service `name`: TERM, KILL after `grace`; cancels a pending restart. Reports
/// `stopping`, `exit` (from the supervisor) and `stopped` through the service's logs.
pub fn stop(sp: &SpriteServices, name: &str, grace: Duration) -> Result<(), StopError> {
    let group = {
        let mut svcs = lock(&sp.svcs);
        let svc = svcs.get_mut(name).ok_or(StopError::NotFound)?;
        if !svc.active {
            return Err(StopError::NotRunning);
        }
        begin_stop(svc)
    };
    if let Some(g) = &group {
        g.signal(libc::SIGTERM);
    }
    let exited = wait_exited(sp, &[name.to_owned()], Instant::now() + grace);
    if !exited {
        if let Some(g) = &group {
            g.signal(libc::SIGKILL);
        }
        wait_exited(sp, &[name.to_owned()], Instant::now() + KILL_WAIT);
    }
    finish_stop(sp, name);
    Ok(())
}

fn begin_stop(svc: &mut super::Svc) -> Option<Arc<dyn crate::runtime::SignalGroup>> {
    svc.gen += 1;
    svc.active = false;
    svc.status = Status::Stopping;
    svc.next_restart_at = None;
    svc.logs.event(Event::new("stopping"));
    svc.group.as_ref().map(|(_, g)| g.clone())
}

fn finish_stop(sp: &SpriteServices, name: &str) {
    let mut svcs = lock(&sp.svcs);
    if let Some(svc) = svcs.get_mut(name) {
        if svc.status == Status::Stopping {
            svc.status = Status::Stopped;
            svc.pid = None;
            if svc.group.is_some() {
                svc.error = "did not exit after KILL".into();
                svc.logs.event(Event::with_data("error", svc.error.clone()));
            }
        }
        svc.logs.event(Event::new("stopped"));
    }
    sp.cv.notify_all();
}

/// Waits until none of `names` has a live process, or `deadline`; true = all exited.
fn wait_exited(sp: &SpriteServices, names: &[String], deadline: Instant) -> bool {
    let mut svcs = lock(&sp.svcs);
    loop {
        let live = names
            .iter()
            .any(|n| svcs.get(n).is_some_and(|s| s.live_pid.is_some()));
        if !live {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        svcs = sp
            .cv
            .wait_timeout(svcs, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Stops every active service of `sp` at once (see [`super::stop_all`]).
#[allow(dead_code)] // through super::stop_all, which other branches call
pub fn stop_all(sp: &SpriteServices, grace: Duration) {
    let (names, groups): (Vec<String>, Vec<_>) = {
        let mut svcs = lock(&sp.svcs);
        svcs.iter_mut()
            .filter(|(_, s)| s.active)
            .map(|(n, s)| (n.clone(), begin_stop(s)))
            .unzip()
    };
    for g in groups.iter().flatten() {
        g.signal(libc::SIGTERM);
    }
    if !wait_exited(sp, &names, Instant::now() + grace) {
        for g in groups.iter().flatten() {
            g.signal(libc::SIGKILL);
        }
        wait_exited(sp, &names, Instant::now() + KILL_WAIT);
    }
    for n in &names {
        finish_stop(sp, n);
    }
}

/// KILLs every service process of `sp` and cancels restarts (deletion, shutdown).
pub fn kill_all(sp: &SpriteServices) {
    let mut svcs = lock(&sp.svcs);
    for svc in svcs.values_mut() {
        svc.gen += 1;
        svc.active = false;
        svc.status = Status::Stopped;
        svc.next_restart_at = None;
        if let Some((_, g)) = &svc.group {
            g.signal(libc::SIGKILL);
        }
    }
    sp.cv.notify_all();
}

/// Why a signal could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SignalError {
    /// No such service.
    NotFound,
    /// It has no running process.
    NotRunning,
}

/// Sends `sig` to service `name`'s process group. TERM or KILL make it exit, which (the
/// service still wanted running) counts as a crash: it is restarted.
pub fn signal(sp: &SpriteServices, name: &str, sig: i32) -> Result<(), SignalError> {
    let svcs = lock(&sp.svcs);
    let svc = svcs.get(name).ok_or(SignalError::NotFound)?;
    match &svc.group {
        Some((_, g)) => {
            g.signal(sig);
            Ok(())
        }
        None => Err(SignalError::NotRunning),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
        assert_eq!(backoff(0), Duration::from_millis(500));
    }
}
