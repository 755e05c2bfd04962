//! tether_watchdog: the last line of defence against orphans.
//!
//! The reactor of a VM running Tether starts this program with one end of a unix
//! `SOCK_SEQPACKET` socket pair on its stdin and tells it, one record each, which process groups
//! to guard (`+PGID`, carrying a pidfd of the group's leader as `SCM_RIGHTS`), which are gone
//! (`-PGID`), and the cgroup directory that holds every child cgroup (`C<path>`). When the VM
//! dies — however it dies, SIGKILL and the OOM killer included — the kernel closes the other
//! end, `recvmsg` returns end of file, and this program kills that whole cgroup tree
//! (`cgroup.kill`) and every guarded group, removes the empty cgroups, and exits.
//!
//! Groups are signalled through the leader's pidfd with `PIDFD_SIGNAL_PROCESS_GROUP`
//! (Linux ≥ 6.9), which reaches the group even after its leader was reaped and never a later
//! group that reuses its number; older kernels fall back to `kill(-pgid)`.
//!
//! It runs in its own process group, without `PR_SET_PDEATHSIG`, and — as root — with an
//! `oom_score_adj` of -1000, so that the OOM killer that took the VM does not take it next.
//! It never signals pid 1, every process (`-1`), its own group or the VM it guards.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// What the watchdog guards.
#[derive(Default)]
struct Guarded {
    /// Group id → a pidfd of its leader (when one came with the record).
    groups: BTreeMap<i32, Option<OwnedFd>>,
    cgroup_roots: Vec<PathBuf>,
}

/// Never 0 or 1 (`kill(0)` is our own group, `kill(-1)` every process), never the VM.
fn allowed(pgid: i32, vm: i32) -> bool {
    // SAFETY: getpgrp has no preconditions.
    pgid > 1 && pgid != vm && pgid != unsafe { libc::getpgrp() }
}

/// Applies one record. Malformed records are ignored.
fn apply(record: &[u8], fd: Option<OwnedFd>, vm: i32, guarded: &mut Guarded) {
    let text = String::from_utf8_lossy(record);
    let text = text.trim_end_matches('\n');
    let (op, rest) = text.split_at(text.len().min(1));
    match op {
        "C" if rest.starts_with('/') => {
            let root = PathBuf::from(rest);
            if !guarded.cgroup_roots.contains(&root) {
                guarded.cgroup_roots.push(root);
            }
        }
        "+" | "-" => {
            let Ok(pgid) = rest.parse::<i32>() else {
                return;
            };
            if !allowed(pgid, vm) {
                return;
            }
            if op == "+" {
                guarded.groups.insert(pgid, fd);
            } else {
                guarded.groups.remove(&pgid);
            }
        }
        _ => {}
    }
}

fn pidfd_send_signal(pidfd: RawFd, signal: i32, flags: libc::c_uint) -> i64 {
    // SAFETY: the syscall takes a pidfd, a signal, a null siginfo and flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    }
}

fn kill_all(guarded: &Guarded, vm: i32) {
    for root in &guarded.cgroup_roots {
        // One write kills every process of every child cgroup, setsid daemons included.
        let _ = std::fs::write(root.join("cgroup.kill"), "1");
    }
    for (&pgid, leader) in &guarded.groups {
        if !allowed(pgid, vm) {
            continue;
        }
        let by_pidfd = leader.as_ref().is_some_and(|fd| {
            // The leader itself, wherever it moved, and the group it created.
            pidfd_send_signal(fd.as_raw_fd(), libc::SIGKILL, 0);
            pidfd_send_signal(fd.as_raw_fd(), libc::SIGKILL, PIDFD_SIGNAL_PROCESS_GROUP) == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        });
        if !by_pidfd {
            // SAFETY: kill(2) with a negative pid (a group > 1) has no memory effects.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    for root in &guarded.cgroup_roots {
        remove_tree(root);
    }
}

/// Removes the tree once its processes are gone (zombies do not count), deepest cgroups first
/// (children make their own, nested VMs make trees), trying for at most a second.
fn remove_tree(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while remove_below(root).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_below(path: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = remove_below(&entry.path());
        }
    }
    std::fs::remove_dir(path)
}

/// Receives one record and the fd it carries. `None` at end of file (or a broken socket).
fn receive(socket: RawFd, buffer: &mut [u8]) -> Option<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut control = [0u64; 8];
    loop {
        // SAFETY: msghdr is plain data; zeroed is a valid value.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `message` points to live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if n == 0 {
            return None;
        }
        let mut fd = None;
        // SAFETY: the kernel filled `control`; CMSG_FIRSTHDR/NXTHDR walk it within
        // msg_controllen, and an SCM_RIGHTS payload holds fds we now own.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(header).cast::<RawFd>();
                    let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        let raw = std::ptr::read_unaligned(data.add(i));
                        let owned = OwnedFd::from_raw_fd(raw);
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        return Some((n as usize, fd));
    }
}

fn main() {
    // A terminal's SIGINT or SIGHUP must not end the guard before the VM is gone.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Root only; elsewhere the write fails and the default score stays.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    // SAFETY: getppid has no preconditions. Our parent is the VM we guard.
    let vm = unsafe { libc::getppid() };
    let mut guarded = Guarded::default();
    let mut buffer = vec![0u8; 8192];
    while let Some((n, fd)) = receive(0, &mut buffer) {
        apply(&buffer[..n], fd, vm, &mut guarded);
    }
    kill_all(&guarded, vm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_records() {
        let mut guarded = Guarded::default();
        let vm = 4242;
        for record in [
            "+100",
            "+200\n",
            "-100",
            "+1",
            "+0",
            "+-5",
            "x300",
            "+abc",
            "",
            "-",
            "+4242",
            "C/sys/fs/cgroup/tether-1",
        ] {
            apply(record.as_bytes(), None, vm, &mut guarded);
        }
        assert_eq!(
            guarded.groups.keys().copied().collect::<Vec<_>>(),
            vec![200]
        );
        assert_eq!(
            guarded.cgroup_roots,
            vec![PathBuf::from("/sys/fs/cgroup/tether-1")]
        );
    }
}
