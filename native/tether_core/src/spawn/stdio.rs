//! A child's fds 0–2: pipes, a pty, `/dev/null`, a file it opens itself, or one of ours.

use super::*;
use crate::command::{Command, Input, Output};
use crate::sys;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The child closes this standard descriptor.
pub(super) const CLOSE: RawFd = -1;

/// The child points this standard descriptor where the other output stream goes.
pub(super) const OTHER: RawFd = -2;

/// The child keeps the VM's descriptor.
pub(super) const INHERIT: RawFd = -3;

/// The child opens this standard descriptor's file itself (see [`ChildFile`]).
pub(super) const FILE: RawFd = -4;

/// A file the child opens for one of its fds 0–2 once it runs as its user, so that the user's
/// rights apply and what it creates is the user's.
#[derive(Clone, Copy)]
pub(super) struct ChildFile {
    /// Null unless the descriptor's target is [`FILE`].
    pub(super) path: *const libc::c_char,
    pub(super) flags: libc::c_int,
    pub(super) mode: libc::mode_t,
}

impl ChildFile {
    pub(super) const NONE: ChildFile = ChildFile {
        path: std::ptr::null(),
        flags: 0,
        mode: 0,
    };
}

/// The descriptors of one spawn: the child's targets for fds 0–2, ours to keep, and the ones
/// that only need to stay open until the clone returns.
pub(super) struct Stdio {
    pub(super) targets: [RawFd; 3],
    pub(super) files: [ChildFile; 3],
    /// The paths `files` point to.
    pub(super) _paths: Vec<CString>,
    pub(super) controlling_tty: RawFd,
    pub(super) ours: [Option<OwnedFd>; 3],
    pub(super) terminal: Option<OwnedFd>,
    pub(super) _child_ends: Vec<OwnedFd>,
}

pub(super) fn stdio(command: &Command, dev_null: RawFd) -> Result<Stdio, SpawnError> {
    let mut child_ends = Vec::new();
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut files = [ChildFile::NONE; 3];
    let mut paths = Vec::new();
    // The child opens the file itself; the CString's heap buffer does not move when `paths` grows.
    let mut file = |index: usize, path: &[u8], flags: libc::c_int, mode: u32| {
        let path = cstring(path)?;
        files[index] = ChildFile {
            path: path.as_ptr(),
            flags,
            mode,
        };
        paths.push(path);
        Ok::<RawFd, SpawnError>(FILE)
    };
    let keep = |fd: OwnedFd, child_ends: &mut Vec<OwnedFd>| {
        let raw = fd.as_raw_fd();
        child_ends.push(fd);
        raw
    };
    let pty = command.pty.map(sys::open_pty).transpose()?;
    let mut terminal = None;
    let slave = pty.as_ref().map(|(_, slave)| slave.as_raw_fd());

    let stdin = match &command.stdin {
        Input::Null => dev_null,
        Input::Close => CLOSE,
        Input::File(path) => file(0, path, libc::O_RDONLY, 0)?,
        Input::Fd(fd) => *fd,
        Input::Pipe => match slave {
            Some(slave) => slave,
            None => {
                let (read, write) = sys::input_pipe(command.pipe_size)?;
                ours[0] = Some(write);
                keep(read, &mut child_ends)
            }
        },
    };
    let mut outputs = [CLOSE; 2];
    for (index, output) in [&command.stdout, &command.stderr].into_iter().enumerate() {
        outputs[index] = match output {
            Output::Null => dev_null,
            Output::Close => CLOSE,
            Output::Other => OTHER,
            Output::Inherit => INHERIT,
            Output::File { path, append, mode } => {
                let flags = libc::O_WRONLY
                    | libc::O_CREAT
                    | if *append {
                        libc::O_APPEND
                    } else {
                        libc::O_TRUNC
                    };
                file(index + 1, path, flags, *mode)?
            }
            Output::Pipe => match slave {
                Some(slave) => slave,
                None => {
                    let (read, write) = sys::output_pipe(command.pipe_size)?;
                    ours[index + 1] = Some(read);
                    keep(write, &mut child_ends)
                }
            },
        };
    }
    if let Some((master, slave)) = pty {
        // Our end never blocks, whichever directions we keep (a duplicate shares the flag).
        sys::set_nonblocking(&master)?;
        terminal = Some(sys::duplicate(&master)?);
        // One master for both directions: a duplicate lets stdin and stdout be watched apart.
        if command.stdin == Input::Pipe {
            ours[0] = Some(sys::duplicate(&master)?);
        }
        if command.stdout == Output::Pipe || command.stderr == Output::Pipe {
            ours[1] = Some(master);
        }
        child_ends.push(slave);
    }
    Ok(Stdio {
        targets: [stdin, outputs[0], outputs[1]],
        files,
        _paths: paths,
        controlling_tty: slave.unwrap_or(CLOSE),
        ours,
        terminal,
        _child_ends: child_ends,
    })
}
