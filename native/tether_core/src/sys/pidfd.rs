//! Children by pidfd: open one, see whether it exited without reaping it, reap it.

use super::{cvt, cvt_retry, own_above_stdio};
use nix::errno::Errno;
use std::os::fd::{OwnedFd, RawFd};

/// Opens a pidfd for a process we did not start (`Reactor::adopt`).
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: the syscall takes a pid and flags 0.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = cvt(fd as libc::c_int)?;
    own_above_stdio(fd)
}

/// What `waitid` says of a child, without reaping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitState {
    Running,
    /// Exited and waiting to be reaped.
    Exited,
    /// Gone and reaped by the kernel (SIGCHLD was ignored): its status is lost.
    Lost,
}

/// Whether the child behind `pidfd` has exited, without reaping it.
pub fn exit_state(pidfd: RawFd) -> ExitState {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid siginfo_t to fill.
    match cvt_retry(|| unsafe { libc::waitid(libc::P_PIDFD, pidfd as _, &mut info, flags) }) {
        Err(Errno::ECHILD) => ExitState::Lost,
        Err(_) => ExitState::Running,
        // SAFETY: si_pid is valid to read after waitid; 0 means "not exited yet".
        Ok(_) if unsafe { info.si_pid() } == 0 => ExitState::Running,
        Ok(_) => ExitState::Exited,
    }
}

/// Reaps the exited child `pid`, returning its raw wait status and resource usage.
pub fn reap(pid: libc::pid_t) -> Result<(i32, libc::rusage), Errno> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to an int and an rusage.
    cvt_retry(|| unsafe { libc::wait4(pid, &mut status, 0, &mut usage) })?;
    Ok((status, usage))
}

/// Whether the SIGCHLD disposition is "ignore", which makes the kernel reap children itself and
/// lose their exit status.
pub fn sigchld_ignored() -> bool {
    // SAFETY: sigaction is plain data; zeroed is a valid value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one.
    let ret = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut current) };
    ret == 0 && current.sa_sigaction == libc::SIG_IGN
}

/// Sends `signal` through `pidfd`; `flags` as `pidfd_send_signal(2)` takes them. Policy (what
/// may be signalled at all) lives in `guard`, the only caller.
pub fn pidfd_send_signal(pidfd: RawFd, signal: i32, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: the syscall takes a pidfd, a signal, a null siginfo and flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    cvt(ret as libc::c_int).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_child_is_seen_exited_then_reaped_with_its_status() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x; exit 3"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let pidfd = pidfd_open(pid).unwrap();
        assert_eq!(exit_state(pidfd.as_raw_fd()), ExitState::Running);
        drop(child.stdin.take());
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 10_000) }, 1);
        assert_eq!(exit_state(pidfd.as_raw_fd()), ExitState::Exited);
        let (status, _usage) = reap(pid).unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        assert_eq!(reap(pid), Err(Errno::ECHILD));
        assert!(!sigchld_ignored());
        // Reaped above: std's wait has nothing left to reap.
        assert!(child.try_wait().is_err());
    }
}
