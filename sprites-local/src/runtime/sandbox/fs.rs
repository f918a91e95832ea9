//! [`SandboxFs`]: the filesystem API of a sandboxed sprite, run *inside* the sprite.
//!
//! Every call goes to the sprite's agent, which forks a child for it. The child has the
//! sprite's root as its root and exactly an exec's confinement (the `sprite` user, no
//! capabilities, `no_new_privs`, none of the agent's fds), then runs the same
//! [`HostFs`](crate::fsops::HostFs) code. So no path, `..`, symlink or `/proc` magic link
//! can name anything outside the sprite: the kernel resolves them all against the sprite's
//! root. Streaming never crosses the control socket: the child passes the open file (or a
//! write's temp file) back as an fd and the server reads or fills it directly.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::handle::AgentHandle;
use super::ipc::{FsCall, FsReply};
use crate::fsops::{
    FsError, FsOp, FsOutput, OpenedFile, PendingWrite, SpriteFs, WriteSpec, Written,
};

/// One sprite's filesystem, through its agent.
pub(crate) struct SandboxFs {
    /// The agent, or why it could not be started (every call then fails with that).
    pub(crate) agent: Result<Arc<AgentHandle>, String>,
}

impl SandboxFs {
    /// Sends `call` (with a commit's temp `file`); a failed call, or trouble reaching the
    /// agent, is an [`FsError`] about the call's path (`EIO` for the latter).
    fn call(&self, call: &FsCall, file: Option<&File>) -> Result<(FsReply, Option<File>), FsError> {
        let path = call.path();
        let agent = self
            .agent
            .as_ref()
            .map_err(|e| FsError::with_detail(libc::EIO, path, e))?;
        let (reply, mut fds) = agent
            .fs(call, file.map(|f| f.as_raw_fd()))
            .map_err(|e| FsError::with_detail(libc::EIO, path, &format!("sprite agent: {e}")))?;
        match reply {
            FsReply::Failed(e) => Err(e),
            reply => Ok((reply, fds.pop().map(File::from))),
        }
    }
}

/// An answer that does not fit the call: a broken agent.
fn unexpected(path: &str) -> FsError {
    FsError::with_detail(libc::EIO, path, "unexpected answer from the sprite's agent")
}

impl SpriteFs for SandboxFs {
    fn run(&self, op: &FsOp) -> Result<FsOutput, FsError> {
        let call = FsCall::Run { op: op.clone() };
        let (reply, _) = self.call(&call, None)?;
        reply.into_output().ok_or_else(|| unexpected(call.path()))
    }

    fn open_read(&self, path: &str) -> Result<OpenedFile, FsError> {
        let call = FsCall::OpenRead {
            path: path.to_owned(),
        };
        match self.call(&call, None)? {
            (FsReply::Opened { len }, Some(file)) => Ok(OpenedFile { file, len }),
            _ => Err(unexpected(path)),
        }
    }

    fn begin_write(&self, spec: &WriteSpec) -> Result<PendingWrite, FsError> {
        let call = FsCall::BeginWrite { spec: spec.clone() };
        match self.call(&call, None)? {
            (FsReply::Begun { temp, target }, Some(file)) => Ok(PendingWrite {
                file,
                temp,
                target,
                spec: spec.clone(),
            }),
            (FsReply::Begun { temp, .. }, None) => {
                // No file came with it: remove the temp file rather than leave it behind.
                let _ = self.call(&FsCall::AbortWrite { temp }, None);
                Err(unexpected(&spec.path))
            }
            _ => Err(unexpected(&spec.path)),
        }
    }

    fn commit_write(&self, pending: PendingWrite) -> Result<Written, FsError> {
        let PendingWrite {
            file,
            temp,
            target,
            spec,
        } = pending;
        let path = spec.path.clone();
        let call = FsCall::CommitWrite {
            temp: temp.clone(),
            target,
            spec,
        };
        match self.call(&call, Some(&file)) {
            Ok((FsReply::Written(w), _)) => Ok(w),
            other => {
                // The child removes the temp file when the commit itself fails; if the call
                // never ran (agent trouble), try once more so no temp file is left.
                drop(file);
                let _ = self.call(&FsCall::AbortWrite { temp }, None);
                match other {
                    Err(e) => Err(e),
                    Ok(_) => Err(unexpected(&path)),
                }
            }
        }
    }

    fn remove_temp(&self, temp: &str) {
        let _ = self.call(
            &FsCall::AbortWrite {
                temp: temp.to_owned(),
            },
            None,
        );
    }

    fn watch(&self, spec: &crate::fswatch::WatchSpec) -> Result<std::os::fd::OwnedFd, FsError> {
        let path = spec.paths.first().map_or("/", String::as_str);
        let agent = self
            .agent
            .as_ref()
            .map_err(|e| FsError::with_detail(libc::EIO, path, e))?;
        agent
            .fs_watch(spec)
            .map_err(|e| FsError::with_detail(libc::EIO, path, &format!("sprite agent: {e}")))
    }

    fn abort_write(&self, pending: PendingWrite) {
        let PendingWrite { file, temp, .. } = pending;
        drop(file);
        let _ = self.call(&FsCall::AbortWrite { temp }, None);
    }
}
