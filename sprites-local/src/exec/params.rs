//! Exec query validation (PROTOCOL.md §6.1): `cmd`, `path`, `env`, `dir`, `stdin`, `tty`.

use crate::net::query::Query;

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
    if tty {
        return Err(invalid("tty not yet supported"));
    }
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
    })
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
        assert!(params("cmd=ls&tty=true")
            .unwrap_err()
            .contains("tty not yet supported"));
        assert!(params("cmd=ls&tty=maybe").is_err());
        assert!(params("cmd=ls&env=NOEQUALS")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(params("cmd=ls&env=%3Dv").is_err());
        assert!(params("cmd=a%00b").is_err());
    }
}
