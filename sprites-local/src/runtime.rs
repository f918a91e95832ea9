//! Runtimes: how a sprite's files exist and how its processes are started.
//!
//! Everything sprite-specific about running a process goes through [`SpriteRuntime`], so a
//! sandbox runtime (namespaces + overlay root, ARCHITECTURE.md §3) can be added beside
//! [`HostRuntime`] without touching the HTTP or exec code.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;

/// Which runtime runs sprites' processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Pick the best runtime this machine supports (currently always [`Runtime::Host`]).
    Auto,
    /// Isolated sprites (own root filesystem and PID namespace). Not yet available.
    Sandbox,
    /// No isolation: processes run as the server's user, directly on this machine.
    Host,
}

impl Runtime {
    /// The lowercase name used on the command line (`auto`, `sandbox`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Auto => "auto",
            Runtime::Sandbox => "sandbox",
            Runtime::Host => "host",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;

    /// Parses `auto`, `sandbox` or `host` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Runtime::Auto),
            "sandbox" => Ok(Runtime::Sandbox),
            "host" => Ok(Runtime::Host),
            _ => Err(format!(
                "unknown runtime {s:?} (expected auto, sandbox or host)"
            )),
        }
    }
}

/// What to run for an exec, already validated by the exec layer.
#[derive(Debug)]
pub(crate) struct ProcessSpec<'a> {
    /// The program to look up in `PATH` (the `path` parameter, else `cmd[0]`).
    pub program: &'a str,
    /// Full argv; `argv[0]` is what the process sees as its name.
    pub argv: &'a [String],
    /// Environment additions in order (sprite environment, then `env` params; later win).
    pub env: &'a [(String, String)],
    /// The `dir` parameter, if any (relative paths are relative to the sprite's home).
    pub dir: Option<&'a str>,
    /// Give the process a stdin pipe (else the null device).
    pub stdin: bool,
}

/// A started process and the directory it started in.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// The child; stdout and stderr are pipes, stdin a pipe if requested.
    pub child: Child,
    /// The working directory, as shown in the session list.
    pub workdir: String,
}

/// Why a process could not be started.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The requested working directory does not exist or is not a directory.
    InvalidDirectory(String),
    /// `spawn` failed (ENOENT = program not found, EACCES = not executable, ...).
    Io(io::Error),
}

/// How sprites' files and processes exist. One instance serves every sprite.
pub(crate) trait SpriteRuntime: Send + Sync {
    /// The concrete runtime (never [`Runtime::Auto`]).
    fn kind(&self) -> Runtime;
    /// One human-readable line about what this runtime isolates.
    fn note(&self) -> String;
    /// Lays out a new sprite's files under `sprite_dir` (which exists).
    fn create_sprite(&self, sprite_dir: &Path) -> io::Result<()>;
    /// Starts a process for the sprite stored at `sprite_dir`, in its own process group,
    /// with stdout and stderr piped.
    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError>;
}

/// Resolves the requested runtime to an implementation.
pub(crate) fn resolve(requested: Runtime) -> io::Result<Box<dyn SpriteRuntime>> {
    match requested {
        Runtime::Auto => Ok(Box::new(HostRuntime { auto: true })),
        Runtime::Host => Ok(Box::new(HostRuntime { auto: false })),
        Runtime::Sandbox => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "sandbox runtime not yet available",
        )),
    }
}

/// Runs processes directly on this machine as the server's user. A sprite is a directory;
/// its `home/` is the default working directory and `HOME`. Isolates nothing.
pub(crate) struct HostRuntime {
    /// Chosen by `auto` rather than asked for (only changes the note).
    auto: bool,
}

/// The environment variable the CLI reads the token from; never passed to processes.
pub(crate) const TOKEN_ENV: &str = "SPRITES_LOCAL_TOKEN";

impl HostRuntime {
    fn home(sprite_dir: &Path) -> PathBuf {
        sprite_dir.join("home")
    }
}

impl SpriteRuntime for HostRuntime {
    fn kind(&self) -> Runtime {
        Runtime::Host
    }

    fn note(&self) -> String {
        let how = if self.auto {
            " (auto: no sandbox runtime available yet)"
        } else {
            ""
        };
        format!(
            "runtime host{how}: NO ISOLATION — commands run as this user on this machine, \
             with full access to its files and network"
        )
    }

    fn create_sprite(&self, sprite_dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(Self::home(sprite_dir))
    }

    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError> {
        let home = Self::home(sprite_dir);
        let cwd = match spec.dir {
            Some(dir) => {
                let d = home.join(dir); // an absolute `dir` replaces `home`
                if !d.is_dir() {
                    return Err(SpawnError::InvalidDirectory(format!(
                        "working directory {dir:?} does not exist or is not a directory"
                    )));
                }
                d
            }
            None => {
                // A user may have removed the home directory through an exec; without it
                // spawn would fail with ENOENT and look like a missing program.
                if !home.is_dir() {
                    std::fs::create_dir_all(&home).map_err(SpawnError::Io)?;
                }
                home.clone()
            }
        };
        let mut cmd = Command::new(spec.program);
        if let Some((argv0, rest)) = spec.argv.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd.current_dir(&cwd)
            .env_remove(TOKEN_ENV)
            .env("HOME", &home)
            .env("PWD", &cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            // Own process group: signals and the disconnect kill reach the whole tree.
            .process_group(0)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(SpawnError::Io)?;
        Ok(Spawned {
            child,
            workdir: cwd.to_string_lossy().into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_runtime() {
        assert_eq!("HOST".parse::<Runtime>(), Ok(Runtime::Host));
        assert_eq!("auto".parse::<Runtime>(), Ok(Runtime::Auto));
        assert_eq!("sandbox".parse::<Runtime>(), Ok(Runtime::Sandbox));
        assert!("vm".parse::<Runtime>().is_err());
    }

    #[test]
    fn auto_resolves_to_host_and_sandbox_is_unavailable() {
        assert_eq!(resolve(Runtime::Auto).unwrap().kind(), Runtime::Host);
        assert!(resolve(Runtime::Auto)
            .unwrap()
            .note()
            .contains("NO ISOLATION"));
        let err = resolve(Runtime::Sandbox).err().unwrap();
        assert_eq!(err.to_string(), "sandbox runtime not yet available");
    }
}
