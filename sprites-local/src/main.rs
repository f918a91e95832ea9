//! `sprites-local` command line: run the local Sprites API server until SIGINT/SIGTERM.

#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use sprites_local::{Runtime, Server, TerminationSignal};

const USAGE: &str = "\
sprites-local — a local server that speaks the Sprites API

USAGE:
    sprites-local [serve] [OPTIONS]

OPTIONS:
    --addr ADDR         address to listen on (default 127.0.0.1:7780)
    --token TOKEN       bearer token clients must send (default: $SPRITES_LOCAL_TOKEN,
                        else a random one, printed at startup)
    --data-dir DIR      where sprites are stored (default: $XDG_DATA_HOME/sprites-local
                        or ~/.local/share/sprites-local)
    --runtime RUNTIME   auto | sandbox | host (default auto: sandbox where the kernel
                        allows it, else host, which does NOT isolate anything)
    --base-dir DIR      the sandbox's read-only base layer (default /)
    --sprite-process-limit N
                        the sandbox's cap on processes (threads count) per user
                        inside a sprite (default 4096)
    --dns-upstream ADDR the name server (IP or IP:PORT) sprites' resolvers forward the
                        names their network policy allows to (sandbox runtime;
                        default: the first nameserver of /etc/resolv.conf)
    --scrollback-bytes N
                        recent output each detachable (TTY) session keeps for
                        clients that attach later (default 1048576)
    --max-connections N most connections open at once; more get 503 (default:
                        from the open-file limit, see the README)
    --max-unauthenticated N
                        most open connections that have not sent a request with
                        the token yet (default: max-connections / 4, at most 4096)
    --durable-writes    fsync every filesystem-API write before answering it (default:
                        atomic and visible at once, flushed by the kernel later)
    --warm-after SECS   idle seconds before a running sprite is warm (default 30)
    --cold-after SECS   idle seconds before a sprite is halted and cold: its
                        processes end, files stay (default 600)
    -h, --help          print this help
    -V, --version       print the version
";

const DEFAULT_ADDR: &str = "127.0.0.1:7780";

#[derive(Debug, Default, PartialEq)]
struct Options {
    addr: Option<String>,
    token: Option<String>,
    data_dir: Option<String>,
    base_dir: Option<String>,
    runtime: Option<Runtime>,
    process_limit: Option<u64>,
    dns_upstream: Option<std::net::SocketAddr>,
    scrollback_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_unauthenticated: Option<usize>,
    warm_after: Option<usize>,
    durable_writes: bool,
    cold_after: Option<usize>,
}

#[derive(Debug, PartialEq)]
enum Cmd {
    Help,
    Version,
    // Boxed: the options are far bigger than the other variants.
    Serve(Box<Options>),
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cmd, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("serve") {
        args.next();
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "--addr" => opts.addr = Some(value("--addr")?),
            "--token" => opts.token = Some(value("--token")?),
            "--data-dir" => opts.data_dir = Some(value("--data-dir")?),
            "--base-dir" => opts.base_dir = Some(value("--base-dir")?),
            "--sprite-process-limit" => {
                let v = value("--sprite-process-limit")?;
                let n = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--sprite-process-limit: {v:?} is not a positive number")
                })?;
                opts.process_limit = Some(n);
            }
            "--dns-upstream" => {
                let v = value("--dns-upstream")?;
                let addr = v
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| format!("--dns-upstream: {v:?} is not an IP address[:port]"))?;
                opts.dns_upstream = Some(addr);
            }
            "--scrollback-bytes" => {
                let v = value("--scrollback-bytes")?;
                let n = v
                    .parse::<usize>()
                    .map_err(|_| format!("--scrollback-bytes: {v:?} is not a number of bytes"))?;
                opts.scrollback_bytes = Some(n);
            }
            "--runtime" => opts.runtime = Some(value("--runtime")?.parse()?),
            "--max-connections" => {
                opts.max_connections = Some(count("--max-connections", &value(&flag)?)?)
            }
            "--max-unauthenticated" => {
                opts.max_unauthenticated = Some(count("--max-unauthenticated", &value(&flag)?)?)
            }
            "--durable-writes" if inline.is_none() => opts.durable_writes = true,
            "--warm-after" => opts.warm_after = Some(count("--warm-after", &value(&flag)?)?),
            "--cold-after" => opts.cold_after = Some(count("--cold-after", &value(&flag)?)?),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Cmd::Serve(Box::new(opts)))
}

/// A positive count given to `flag`.
fn count(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive integer, got {v:?}")),
    }
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Cmd::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Version) => {
            println!("sprites-local {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Serve(o)) => *o,
        Err(e) => {
            eprintln!("sprites-local: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match TerminationSignal::install() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sprites-local: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let token = opts.token.or_else(|| {
        std::env::var("SPRITES_LOCAL_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let generated = token.is_none();
    let mut builder = Server::builder()
        .addr(opts.addr.unwrap_or_else(|| DEFAULT_ADDR.to_owned()))
        .runtime(opts.runtime.unwrap_or(Runtime::Auto));
    if let Some(t) = token {
        builder = builder.token(t);
    }
    if let Some(d) = opts.data_dir {
        builder = builder.data_dir(d);
    }
    if let Some(d) = opts.base_dir {
        builder = builder.base_dir(d);
    }
    if let Some(n) = opts.process_limit {
        builder = builder.sprite_process_limit(n);
    }
    if let Some(a) = opts.dns_upstream {
        builder = builder.dns_upstream(a);
    }
    if let Some(n) = opts.scrollback_bytes {
        builder = builder.scrollback_bytes(n);
    }
    if let Some(n) = opts.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(n) = opts.max_unauthenticated {
        builder = builder.max_unauthenticated(n);
    }
    builder = builder.durable_writes(opts.durable_writes);
    if let Some(n) = opts.warm_after {
        builder = builder.warm_after(std::time::Duration::from_secs(n as u64));
    }
    if let Some(n) = opts.cold_after {
        builder = builder.cold_after(std::time::Duration::from_secs(n as u64));
    }
    let server = match builder.start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sprites-local: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sprites-local listening on {}", server.url());
    if generated {
        let _ = writeln!(out, "token: {}", server.token());
    }
    let _ = writeln!(out, "{}", server.runtime_note());
    let limits = server.limits();
    let _ = writeln!(
        out,
        "connections: at most {} open, {} of them before their first request",
        limits.max_connections, limits.max_unauthenticated
    );
    let _ = out.flush();
    drop(out);

    // Blocks until a handler writes to the pipe (read errors other than EINTR end it too).
    signals.wait();
    eprintln!("sprites-local: shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn args() {
        assert_eq!(parse(&[]), Ok(Cmd::Serve(Box::default())));
        assert_eq!(parse(&["--help"]), Ok(Cmd::Help));
        let Ok(Cmd::Serve(o)) = parse(&[
            "serve",
            "--addr",
            "127.0.0.1:1",
            "--token=t",
            "--data-dir",
            "/d",
            "--runtime",
            "host",
            "--base-dir=/b",
            "--sprite-process-limit",
            "50",
            "--max-connections",
            "100",
            "--max-unauthenticated=10",
            "--scrollback-bytes=4096",
            "--durable-writes",
        ]) else {
            panic!()
        };
        assert!(o.durable_writes);
        assert!(parse(&["--durable-writes=no"]).is_err());
        assert_eq!(o.addr.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(o.token.as_deref(), Some("t"));
        assert_eq!(o.data_dir.as_deref(), Some("/d"));
        assert_eq!(o.runtime, Some(Runtime::Host));
        assert_eq!(o.base_dir.as_deref(), Some("/b"));
        assert_eq!(o.process_limit, Some(50));
        assert_eq!(o.scrollback_bytes, Some(4096));
        assert!(parse(&["--scrollback-bytes", "-1"]).is_err());
        assert!(parse(&["--sprite-process-limit", "0"]).is_err());
        assert!(parse(&["--sprite-process-limit", "x"]).is_err());
        assert_eq!(o.max_connections, Some(100));
        assert_eq!(o.max_unauthenticated, Some(10));
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-unauthenticated", "x"]).is_err());
        assert!(parse(&["--addr"]).is_err());
        assert!(parse(&["--runtime", "vm"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
