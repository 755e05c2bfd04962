//! Thin, checked wrappers over the few syscalls the rest of the crate needs. Every raw result
//! goes through [`cvt`], so errors are `Errno` values and never ignored by accident.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1` return into the thread's `Errno`.
pub fn cvt(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], retrying on `EINTR`.
pub fn cvt_retry(mut f: impl FnMut() -> libc::c_int) -> Result<libc::c_int, Errno> {
    loop {
        match cvt(f()) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Takes ownership of a fresh descriptor, moving it above 2 so that it can never be mistaken for
/// a standard stream (the VM may run with fd 0, 1 or 2 closed).
fn own_above_stdio(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd > 2 {
        return Ok(owned);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd has no memory effects.
    let moved = cvt(unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: as above, a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// A close-on-exec pipe for a child's output: `(read end, write end)`. Our read end is
/// non-blocking; the child's write end is blocking, as programs expect.
pub fn output_pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (read, write) = pipe(size)?;
    set_nonblocking(&read)?;
    Ok((read, write))
}

/// A close-on-exec pipe for a child's input: `(read end, write end)`. Our write end is
/// non-blocking; the child's read end is blocking.
pub fn input_pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (read, write) = pipe(size)?;
    set_nonblocking(&write)?;
    Ok((read, write))
}

fn pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let read = own_above_stdio(fds[0])?;
    let write = own_above_stdio(fds[1])?;
    if size > 0 {
        // Best effort: an unprivileged user past the pipe quota keeps the default size.
        // SAFETY: F_SETPIPE_SZ takes an int and has no memory effects.
        let _ = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    }
    Ok((read, write))
}

/// A close-on-exec unix `SOCK_SEQPACKET` pair, both ends blocking (the watchdog's and the
/// spawner's channel: one message per record, descriptors passed along as `SCM_RIGHTS`).
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: two fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new descriptor for the same open file (close-on-exec).
pub fn duplicate(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd has no memory effects.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A pseudo-terminal: `(master, slave)`, both close-on-exec, sized and with echo as asked.
pub fn open_pty(pty: crate::command::Pty) -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: posix_openpt has no memory arguments.
    let master =
        cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    let master = own_above_stdio(master)?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: valid fd; `name` has room for `name.len()` bytes.
    unsafe {
        cvt(libc::grantpt(master.as_raw_fd()))?;
        cvt(libc::unlockpt(master.as_raw_fd()))?;
        let ret = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if ret != 0 {
            return Err(Errno::from_raw(ret));
        }
    }
    // SAFETY: `name` is NUL-terminated by ptsname_r.
    let slave = cvt(unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    let slave = own_above_stdio(slave)?;
    set_window_size(master.as_raw_fd(), pty.rows, pty.cols)?;
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and termios pointer.
    unsafe {
        cvt(libc::tcgetattr(slave.as_raw_fd(), &mut termios))?;
        if pty.echo {
            termios.c_lflag |= libc::ECHO;
        } else {
            termios.c_lflag &= !(libc::ECHO | libc::ECHONL);
        }
        cvt(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios))?;
    }
    Ok((master, slave))
}

/// Sets a terminal's size (the child gets SIGWINCH).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> Result<(), Errno> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }).map(drop)
}

/// Opens a pidfd for a process we did not start (`Reactor::adopt`).
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: the syscall takes a pid and flags 0.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = cvt(fd as libc::c_int)?;
    own_above_stdio(fd)
}

/// Writes what it can of `data` without blocking, retrying on `EINTR`.
pub fn write(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `data` is valid for `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Sets `O_NONBLOCK`.
pub fn set_nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: F_GETFL/F_SETFL on a valid fd have no memory effects.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// `/dev/null`, opened read-write and close-on-exec.
pub fn open_dev_null() -> Result<OwnedFd, Errno> {
    // SAFETY: the path is a NUL-terminated literal.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    own_above_stdio(fd)
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> Result<OwnedFd, Errno> {
    // SAFETY: eventfd has no memory arguments.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    own_above_stdio(fd)
}

/// Adds 1 to an eventfd, waking whoever polls it.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) still wakes the poller.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter.
pub fn eventfd_drain(fd: RawFd) {
    let mut buf: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64.
    let _ = unsafe { libc::read(fd, (&mut buf as *mut u64).cast(), 8) };
}

/// Reads into `buf`, retrying on `EINTR`. `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Bytes waiting in a pipe.
pub fn bytes_available(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    match cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }) {
        Ok(_) => n.max(0) as usize,
        Err(_) => 0,
    }
}

/// The members of group `pgid` that are not zombies (a zombie is as good as gone, and orphaned
/// zombies may wait seconds for init to reap them). Scans `/proc`: for draining groups only,
/// never on a hot path.
pub fn group_live_members(pgid: i32) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| {
            proc_stat_fields(pid).is_some_and(|(state, _, group)| group == pgid && state != b'Z')
        })
        .collect()
}

/// The state letter, parent pid and process group of `/proc/<pid>/stat`.
pub fn proc_stat_fields(pid: libc::pid_t) -> Option<(u8, libc::pid_t, libc::pid_t)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields follow the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
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

/// The job-control state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, …).
pub fn proc_state(pid: libc::pid_t) -> Option<u8> {
    proc_stat_fields(pid).map(|(state, _, _)| state)
}
