//! Exec query validation (PROTOCOL.md §6.1): `cmd`, `path`, `env`, `dir`, `stdin`, `tty`,
//! `rows`, `cols`, `detachable`, `max_run_after_disconnect`. `cc` (control mode) is
//! accepted and ignored: nothing documents what it changes.

use std::time::Duration;

use crate::net::query::Query;
use crate::time::parse_duration;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl WindowSize {
    /// What a TTY exec gets when the query names no size (the SDKs' own default).
    pub const DEFAULT: WindowSize = WindowSize { rows: 24, cols: 80 };
}

/// Exec query parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    /// argv (`cmd` params), non-empty with a non-empty `argv[0]`.
    pub argv: Vec<String>,
    /// Program to look up (`path`, else `cmd[0]`).
    pub program: String,
    /// `env` params split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `dir` param.
    pub dir: Option<String>,
    /// `stdin` param.
    pub stdin: bool,
    /// `tty=true`: the size of its pseudo-terminal (`rows`, `cols`, each defaulting to
    /// [`WindowSize::DEFAULT`]'s).
    pub tty: Option<WindowSize>,
    /// The session outlives its connection (`detachable=true`, every TTY exec, or a
    /// `max_run_after_disconnect`).
    pub detachable: bool,
    /// How long a detachable session may run with nobody attached; `None`: until it exits.
    pub max_run_after_disconnect: Option<Duration>,
}

/// Why an exec query was refused: the message for the client (the API answers it as a
/// 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParams(pub String);

fn invalid(message: &str) -> InvalidParams {
    InvalidParams(message.to_owned())
}

/// Validates the exec query (PROTOCOL.md §6.1).
pub fn parse_params(q: &Query) -> Result<ExecParams, InvalidParams> {
    let argv: Vec<String> = q.get_all("cmd").map(str::to_owned).collect();
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(invalid("exec requires at least one cmd parameter"));
    }
    let tty = q.get_bool("tty", false).map_err(|e| invalid(&e.0))?;
    let tty = tty
        .then(|| -> Result<WindowSize, InvalidParams> {
            Ok(WindowSize {
                rows: dimension(q, "rows", WindowSize::DEFAULT.rows)?,
                cols: dimension(q, "cols", WindowSize::DEFAULT.cols)?,
            })
        })
        .transpose()?;
    let max_run_after_disconnect = match q.get("max_run_after_disconnect") {
        None | Some("") => None,
        Some(text) => Some(parse_duration(text).ok_or_else(|| {
            invalid(&format!(
                "max_run_after_disconnect must be a duration like 30s, got {text:?}"
            ))
        })?),
    };
    let detachable = q.get_bool("detachable", false).map_err(|e| invalid(&e.0))?
        || tty.is_some()
        || max_run_after_disconnect.is_some();
    let stdin = q.get_bool("stdin", false).map_err(|e| invalid(&e.0))?;
    let mut env = Vec::new();
    for kv in q.get_all("env") {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                env.push((k.to_owned(), v.to_owned()))
            }
            _ => {
                return Err(invalid(&format!(
                    "env parameter must be KEY=VALUE, got {kv:?}"
                )))
            }
        }
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd parameters must not contain NUL bytes"));
    }
    let program = q
        .get("path")
        .filter(|p| !p.is_empty())
        .unwrap_or(&argv[0])
        .to_owned();
    let dir = q.get("dir").filter(|d| !d.is_empty()).map(str::to_owned);
    if program.contains('\0') || dir.as_deref().is_some_and(|d| d.contains('\0')) {
        return Err(invalid("path and dir must not contain NUL bytes"));
    }
    Ok(ExecParams {
        argv,
        program,
        env,
        dir,
        stdin,
        tty,
        detachable,
        max_run_after_disconnect,
    })
}

/// A `rows` or `cols` parameter: 1 to 65535 cells, `default` when absent.
fn dimension(q: &Query, name: &str, default: u16) -> Result<u16, InvalidParams> {
    match q.get(name) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid(&format!("{name} must be 1 to 65535, got {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<ExecParams, String> {
        parse_params(&Query::parse(q).unwrap()).map_err(|e| e.0)
    }

    #[test]
    fn exec_params() {
        let p = params("cmd=sh&cmd=-c&cmd=echo+hi&env=A%3D1&env=B%3Dx%3Dy&dir=%2Ftmp&stdin=true")
            .unwrap();
        assert_eq!(p.argv, ["sh", "-c", "echo hi"]);
        assert_eq!(p.program, "sh");
        assert_eq!(
            p.env,
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(p.dir.as_deref(), Some("/tmp"));
        assert!(p.stdin);
        assert_eq!(params("cmd=x&path=/bin/true").unwrap().program, "/bin/true");
        assert_eq!(
            (p.tty, p.detachable, p.max_run_after_disconnect),
            (None, false, None)
        );
    }

    #[test]
    fn tty_sizes_and_detachability() {
        let p = params("cmd=sh&tty=true").unwrap();
        assert_eq!(p.tty, Some(WindowSize::DEFAULT));
        assert!(p.detachable, "every TTY session is detachable");
        let p = params("cmd=sh&tty=true&rows=1&cols=65535").unwrap();
        assert_eq!(
            p.tty,
            Some(WindowSize {
                rows: 1,
                cols: 65535
            })
        );
        // Sizes without tty mean nothing.
        assert_eq!(params("cmd=sh&rows=50").unwrap().tty, None);
        let p = params("cmd=sh&detachable=true").unwrap();
        assert!(p.detachable && p.tty.is_none());
        let p = params("cmd=sh&max_run_after_disconnect=1m30s").unwrap();
        assert!(p.detachable);
        assert_eq!(p.max_run_after_disconnect, Some(Duration::from_secs(90)));
        assert!(!params("cmd=sh&cc=true").unwrap().detachable);
    }

    #[test]
    fn exec_params_errors() {
        for q in ["", "path=ls", "cmd=", "cmd=&cmd=x"] {
            let e = params(q).unwrap_err();
            assert!(
                e.contains("exec requires at least one cmd parameter"),
                "{q}: {e}"
            );
        }
        for q in ["rows=0", "rows=65536", "cols=x", "cols=-1"] {
            let e = params(&format!("cmd=ls&tty=true&{q}")).unwrap_err();
            assert!(e.contains("must be 1 to 65535"), "{q}: {e}");
        }
        assert!(params("cmd=ls&max_run_after_disconnect=soon")
            .unwrap_err()
            .contains("max_run_after_disconnect"));
        assert!(params("cmd=ls&detachable=perhaps").is_err());
        assert!(params("cmd=ls&tty=maybe").is_err());
        assert!(params("cmd=ls&env=NOEQUALS")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(params("cmd=ls&env=%3Dv").is_err());
        assert!(params("cmd=a%00b").is_err());
        assert!(params("cmd=a&path=a%00b").unwrap_err().contains("NUL"));
        assert!(params("cmd=a&dir=%2Ftmp%00x").unwrap_err().contains("NUL"));
    }
}
