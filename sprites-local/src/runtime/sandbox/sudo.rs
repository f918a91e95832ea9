//! `sudo` for sprites whose base has none.
//!
//! On the platform `sprite` has passwordless sudo, and clients rely on it (`sudo -n apt-get
//! install …`). Where the base provides sudo, sprites use it (the upper layer gets a
//! sudoers file). Where it does not (a minimal base), the stub installs this one: a copy
//! of the server's own binary at [`PATH`], setuid root, in the sprite's upper layer, and a
//! `sudo` link to it in `/usr/local/bin`. Root there is the sprite's root (a host id of
//! the sprite's range), so the setuid bit gives nothing outside the sprite.
//!
//! The binary recognises itself before `main` (the ELF constructor in `sys::entry` asks
//! [`is_sudo`]) and runs [`main`]: the subset of sudo that scripts use, with no password
//! and no configuration: `-n`, `-E`, `-H`, `-u USER`, `-i`, `-s`, `--`.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::sys::process as proc;

/// Where the sudo binary lives inside a sprite (a name nothing else uses).
pub const PATH: &str = "/usr/libexec/sprites-local-sudo";
/// The `sudo` command's link to it, relative to the root.
pub const LINK: &str = "usr/local/bin/sudo";

/// Whether this process is the sprites-local sudo: `execfn` (the path it was executed by,
/// `AT_EXECFN`) names a `sudo` and the executable really is [`PATH`].
pub fn is_sudo(execfn: &[u8]) -> bool {
    let name = execfn.rsplit(|b| *b == b'/').next().unwrap_or_default();
    (name == b"sudo" || name == b"sprites-local-sudo")
        && std::fs::read_link("/proc/self/exe")
            .is_ok_and(|p| p.as_os_str().as_bytes() == PATH.as_bytes())
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    user: Option<String>,
    keep_env: bool,
    login: bool,
    shell: bool,
    command: Vec<OsString>,
}

fn parse(args: &[OsString]) -> Result<Request, String> {
    let mut r = Request::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            i += 1;
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        if a.starts_with(b"--") {
            match a {
                b"--non-interactive" => {}
                b"--preserve-env" => r.keep_env = true,
                b"--set-home" => {}
                b"--login" => r.login = true,
                b"--shell" => r.shell = true,
                b"--user" => {
                    i += 1;
                    let u = args.get(i).ok_or("option requires an argument -- 'u'")?;
                    r.user = Some(u.to_string_lossy().into_owned());
                }
                _ => return Err(format!("unsupported option {}", String::from_utf8_lossy(a))),
            }
            i += 1;
            continue;
        }
        let flags = &a[1..];
        for (j, f) in flags.iter().enumerate() {
            match f {
                b'n' | b'H' | b'S' | b'k' => {}
                b'E' => r.keep_env = true,
                b'i' => r.login = true,
                b's' => r.shell = true,
                b'u' => {
                    let rest = &flags[j + 1..];
                    let user = if rest.is_empty() {
                        i += 1;
                        args.get(i)
                            .ok_or("option requires an argument -- 'u'")?
                            .to_string_lossy()
                            .into_owned()
                    } else {
                        String::from_utf8_lossy(rest).into_owned()
                    };
                    r.user = Some(user);
                    break;
                }
                _ => return Err(format!("unsupported option -{}", *f as char)),
            }
        }
        i += 1;
    }
    r.command = args[i..].to_vec();
    if r.command.is_empty() && !(r.login || r.shell) {
        return Err("usage: sudo [-nEHis] [-u user] [--] command [args...]".into());
    }
    Ok(r)
}

/// A passwd entry: name, uid, gid, home, shell.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn account(by: impl Fn(&Account) -> bool) -> Option<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let a = Account {
            name: f[0].to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_owned(),
            shell: f[6].to_owned(),
        };
        by(&a).then_some(a)
    })
}

/// Runs sudo; returns the exit code when the command could not be run.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::fs::read("/proc/self/cmdline")
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .skip(1)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    match run(&args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("sudo: {e}");
            1
        }
    }
}

fn run(args: &[OsString]) -> Result<std::convert::Infallible, String> {
    let req = parse(args)?;
    let caller = proc::getuid();
    // Passwordless, as on the platform: for `sprite` (and root) only.
    let allowed =
        caller == 0 || account(|a| a.name == super::upper::USER).is_some_and(|a| a.uid == caller);
    if !allowed {
        return Err("you are not allowed to run sudo in this sprite".into());
    }
    let caller_name = account(|a| a.uid == caller).map_or_else(|| caller.to_string(), |a| a.name);
    let target = match &req.user {
        None => account(|a| a.uid == 0).unwrap_or(Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }),
        Some(u) => {
            let by_id = u.strip_prefix('#').and_then(|n| n.parse::<u32>().ok());
            account(|a| Some(a.uid) == by_id || a.name == *u)
                .ok_or_else(|| format!("unknown user {u}"))?
        }
    };
    let mut cmd = if req.command.is_empty() {
        let mut c = Command::new(&target.shell);
        if req.login {
            c.arg0(format!(
                "-{}",
                target.shell.rsplit('/').next().unwrap_or("sh")
            ));
        }
        c
    } else if req.shell || req.login {
        let mut c = Command::new(&target.shell);
        let line: Vec<String> = req
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        c.arg("-c").arg(line.join(" "));
        c
    } else {
        let mut c = Command::new(&req.command[0]);
        c.args(&req.command[1..]);
        c
    };
    if !req.keep_env {
        let keep: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.as_bytes();
                k == b"TERM" || k == b"LANG" || k.starts_with(b"LC_") || k == b"COLORTERM"
            })
            .collect();
        cmd.env_clear().envs(keep);
        cmd.env("PATH", super::agent::DEFAULT_PATH);
    }
    cmd.env("HOME", &target.home)
        .env("USER", &target.name)
        .env("LOGNAME", &target.name)
        .env("SHELL", &target.shell)
        .env("SUDO_USER", &caller_name)
        .env("SUDO_UID", caller.to_string())
        .env("SUDO_GID", proc::getgid().to_string());
    if req.login {
        cmd.current_dir(&target.home);
    }
    let become_target = || -> io::Result<()> {
        proc::setgroups(&[target.gid])?;
        proc::setresgid(target.gid)?;
        proc::setresuid(target.uid)
    };
    become_target().map_err(|e| format!("changing to user {}: {e}", target.name))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let err = cmd.exec();
    Err(format!("{program}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Request, String> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn command_lines() {
        let r = p(&["-n", "id", "-u"]).unwrap();
        assert_eq!(r.command, ["id", "-u"]);
        assert_eq!(r.user, None);
        let r = p(&["-nE", "-u", "nobody", "--", "-weird"]).unwrap();
        assert!(r.keep_env);
        assert_eq!(r.user.as_deref(), Some("nobody"));
        assert_eq!(r.command, ["-weird"]);
        assert_eq!(
            p(&["-unobody", "true"]).unwrap().user.as_deref(),
            Some("nobody")
        );
        assert!(p(&["-i"]).unwrap().login);
        assert!(p(&["-n"]).is_err(), "no command");
        assert!(p(&["-x", "true"]).is_err());
        assert!(p(&["-u"]).is_err());
    }
}
