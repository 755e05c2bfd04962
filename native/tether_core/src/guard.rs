//! The one place that sends signals.
//!
//! Every signal Tether sends — `kill/2`, the steps of a stop, the SIGKILL of a group whose
//! leader was stopped, the watchdog's last act excepted (a separate program with its own copy
//! of the same rules) — goes through [`send`]. It refuses, whatever the caller asks:
//! - pid or group numbers ≤ 1 (`kill(0)` is our own group, `kill(-1)` every process, pid 1 init);
//! - the VM's own pid and its own process group.
//!
//! A process is addressed through its pidfd, so a recycled pid is never hit. A group is
//! addressed through its leader's pidfd with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux ≥ 6.9): it
//! reaches the group the leader created even after the leader was reaped, and never a later
//! group that reuses the number, nor the group the leader moved into. Older kernels fall back
//! to `kill(-pgid)`, which is exact while the leader is unreaped (its zombie pins the number).

use crate::cgroup::Cgroup;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// `PIDFD_SIGNAL_PROCESS_GROUP` from `<linux/pidfd.h>` (not in libc's headers yet).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// What a signal is sent to.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// One process, through its pidfd.
    Process { pid: libc::pid_t, pidfd: RawFd },
    /// A process group, through its leader's pidfd.
    Group {
        pgid: libc::pid_t,
        leader_pidfd: RawFd,
    },
}

/// Whether `pid` (a process or a group id) may ever be signalled by Tether.
pub fn allowed(pid: libc::pid_t) -> bool {
    // SAFETY: getpid and getpgrp have no preconditions.
    let (own_pid, own_group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    pid > 1 && pid != own_pid && pid != own_group
}

/// Sends `signal` (0..=64; 0 only checks) to `target`, or refuses with `EPERM` (see the module
/// documentation) or `EINVAL` (no such signal).
pub fn send(target: Target, signal: i32) -> Result<(), Errno> {
    if !(0..=crate::signal::MAX).contains(&signal) {
        return Err(Errno::EINVAL);
    }
    match target {
        Target::Process { pid, pidfd } => {
            if !allowed(pid) {
                return Err(Errno::EPERM);
            }
            crate::sys::pidfd_send_signal(pidfd, signal, 0)
        }
        Target::Group { pgid, leader_pidfd } => {
            if !allowed(pgid) {
                return Err(Errno::EPERM);
            }
            if group_flag_supported() {
                match crate::sys::pidfd_send_signal(
                    leader_pidfd,
                    signal,
                    PIDFD_SIGNAL_PROCESS_GROUP,
                ) {
                    Err(Errno::EINVAL) => GROUP_FLAG.store(NO, Ordering::Relaxed),
                    other => return other,
                }
            }
            // SAFETY: kill(2) with a negative pid (a group, > 1 as checked) has no memory effects.
            crate::sys::cvt(unsafe { libc::kill(-pgid, signal) }).map(drop)
        }
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static GROUP_FLAG: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the kernel takes `PIDFD_SIGNAL_PROCESS_GROUP` (Linux ≥ 6.9), probed once.
pub fn group_flag_supported() -> bool {
    match GROUP_FLAG.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            // Signal 0 to our own group through our own pidfd: EINVAL means the flag is unknown.
            // SAFETY: getpid has no preconditions.
            let supported = crate::sys::pidfd_open(unsafe { libc::getpid() })
                .map(|fd| {
                    crate::sys::pidfd_send_signal(fd.as_raw_fd(), 0, PIDFD_SIGNAL_PROCESS_GROUP)
                })
                .is_ok_and(|r| r != Err(Errno::EINVAL));
            GROUP_FLAG.store(if supported { YES } else { NO }, Ordering::Relaxed);
            supported
        }
    }
}

/// Everything one child's signals reach: the child itself, the group it leads or joined, and
/// its cgroup. Shared by the event loop and the registry, so both signal through one place.
#[derive(Debug)]
pub struct Targets {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub group: Option<Group>,
    /// `kill/2` and the steps of a stop address the group, not the child alone.
    pub kill_group: bool,
    pub cgroup: Option<Cgroup>,
    /// Live children of ours that joined the group this child leads (`{:group, pgid}`): they
    /// are not its leftovers, so while any is alive a drain signals the group's other members
    /// one by one instead of the whole group.
    pub joiners: AtomicUsize,
}

/// A child's process group.
#[derive(Debug)]
pub struct Group {
    pub pgid: libc::pid_t,
    /// The group's leader when the child joined another child's group; `None` when the child
    /// leads it (its own pidfd serves).
    pub leader: Option<Arc<Targets>>,
}

/// Which of a child's targets a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `kill/2`: the child, and its group with `kill_group`.
    Kill,
    /// A stop step: as [`Reach::Kill`], and with `kill_group` every other process of its cgroup.
    Stop,
    /// After the child's exit: what is left of the group it led, and of its cgroup.
    Drain,
}

impl Targets {
    /// A child that is signalled alone.
    pub fn process(pid: libc::pid_t, pidfd: OwnedFd) -> Targets {
        Targets {
            pid,
            pidfd,
            group: None,
            kill_group: false,
            cgroup: None,
            joiners: AtomicUsize::new(0),
        }
    }

    /// Whether children of ours that joined its group are still alive.
    pub fn has_joiners(&self) -> bool {
        self.joiners.load(Ordering::Relaxed) > 0
    }

    /// The group it leads, as a signal target.
    fn led_group(&self) -> Option<Target> {
        let group = self.group.as_ref().filter(|g| g.leader.is_none())?;
        Some(Target::Group {
            pgid: group.pgid,
            leader_pidfd: self.pidfd.as_raw_fd(),
        })
    }

    /// The group that `kill/2` and stops address, as a signal target.
    fn signalled_group(&self) -> Option<Target> {
        let group = self.group.as_ref().filter(|_| self.kill_group)?;
        let leader = group.leader.as_ref().map_or(&self.pidfd, |l| &l.pidfd);
        Some(Target::Group {
            pgid: group.pgid,
            leader_pidfd: leader.as_raw_fd(),
        })
    }

    /// Sends `signal` as far as `reach` says. The child itself is always reached, also when it
    /// moved out of its group. A group or a process that is already gone is not an error; a
    /// refused target is.
    pub fn signal(&self, signal: i32, reach: Reach) -> Result<(), Errno> {
        self.signal_sparing(signal, reach, &Spare::default())
    }

    /// Like [`Targets::signal`]; a drain leaves what `spare` covers alone (children of ours
    /// that joined the group, and what they started).
    pub fn signal_sparing(&self, signal: i32, reach: Reach, spare: &Spare) -> Result<(), Errno> {
        let own = Target::Process {
            pid: self.pid,
            pidfd: self.pidfd.as_raw_fd(),
        };
        let group = match reach {
            // Siblings that joined the group are children of ours, not leftovers.
            Reach::Drain if !spare.is_empty() => {
                // Members are found by group number in /proc. Once the group is empty (the
                // leader reaped, its joiners gone or moved out) that number is free, and may be
                // a stranger's group by now: the exact check through the leader's pidfd first.
                if let Some(group @ Target::Group { pgid, .. }) = self.led_group() {
                    if send(group, 0).is_ok() {
                        signal_members(pgid, signal, spare);
                    }
                }
                None
            }
            Reach::Drain => self.led_group(),
            Reach::Kill | Reach::Stop => self.signalled_group(),
        };
        let mut result = Ok(());
        if let Some(group) = group {
            result = ignore_gone(send(group, signal));
        }
        if reach != Reach::Drain {
            let pgid = self.group.as_ref().map(|g| g.pgid);
            // SAFETY: getpgid has no memory effects; for a reaped pid the pidfd signal below
            // only fails with ESRCH.
            let in_group = group.is_some() && pgid == Some(unsafe { libc::getpgid(self.pid) });
            if !in_group {
                result = result.and(ignore_gone(send(own, signal)));
            }
        }
        // A child stopped alone (`kill_group: false`) goes first; its leftovers are drained.
        let whole_cgroup = reach == Reach::Drain || (reach == Reach::Stop && self.kill_group);
        if let (true, Some(cgroup)) = (whole_cgroup, self.cgroup.as_ref()) {
            let skip_group = group.and(self.group.as_ref().map(|g| g.pgid));
            signal_cgroup(cgroup, signal, self.pid, skip_group);
        }
        result
    }

    /// Sends one signal of a stop sequence. Any signal but SIGKILL and SIGCONT is followed by
    /// SIGCONT: a job-control stopped process acts on it only once continued.
    pub fn stop_signal(&self, signal: i32, reach: Reach, spare: &Spare) -> Result<(), Errno> {
        let result = self.signal_sparing(signal, reach, spare);
        if signal != libc::SIGKILL && signal != libc::SIGCONT {
            let _ = self.signal_sparing(libc::SIGCONT, reach, spare);
        }
        result
    }

    /// Whether anything the child started is still alive once the child itself is reaped: a
    /// process of its cgroup, or a live (not zombie) member of the group it led that `spare`
    /// does not cover.
    pub fn remains(&self, spare: &Spare) -> bool {
        if self.cgroup.as_ref().is_some_and(Cgroup::populated) {
            return true;
        }
        match self.led_group() {
            Some(group @ Target::Group { pgid, .. }) => {
                send(group, 0).is_ok()
                    && crate::sys::group_live_members(pgid)
                        .iter()
                        .any(|pid| !spare.covers(*pid))
            }
            _ => false,
        }
    }
}

/// Sends `signal` to every member of `cgroup` but `leader` and the members of group
/// `skip_group` (they were signalled already). SIGKILL uses `cgroup.kill` where the kernel has
/// it; anything else goes member by member, each pinned by a pidfd and then checked to be in
/// the cgroup still (a pid recycled after the read of `cgroup.procs` is somebody else's).
fn signal_cgroup(cgroup: &Cgroup, signal: i32, leader: libc::pid_t, skip_group: Option<i32>) {
    if signal == libc::SIGKILL && std::fs::write(cgroup.path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in cgroup.members() {
        // SAFETY: getpgid has no memory effects.
        if pid == leader || skip_group.is_some_and(|g| unsafe { libc::getpgid(pid) } == g) {
            continue;
        }
        let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
            continue;
        };
        if cgroup.contains(pid) {
            let _ = send(
                Target::Process {
                    pid,
                    pidfd: pidfd.as_raw_fd(),
                },
                signal,
            );
        }
    }
}

/// Signals each live member of group `pgid` that `spare` does not cover, each through a pidfd
/// taken first and checked to be in the group still (a recycled pid is somebody else's).
fn signal_members(pgid: libc::pid_t, signal: i32, spare: &Spare) {
    for pid in crate::sys::group_live_members(pgid) {
        if spare.covers(pid) {
            continue;
        }
        let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
            continue;
        };
        // SAFETY: getpgid has no memory effects.
        if unsafe { libc::getpgid(pid) } == pgid {
            let _ = send(
                Target::Process {
                    pid,
                    pidfd: pidfd.as_raw_fd(),
                },
                signal,
            );
        }
    }
}

/// What a drain of a group leaves alone: children of ours that joined the group (`roots`), and
/// what they started — their descendants, and with cgroups every member of their cgroups (a
/// joiner's double-forked daemon is nobody's descendant but stays in its cgroup). A shell that
/// forks its command (`dash -c 'sleep 9'`) puts that command in the group too: it belongs to
/// the joiner, not to the leader's leftovers.
#[derive(Debug, Default)]
pub struct Spare {
    roots: Vec<libc::pid_t>,
    /// The `/proc/<pid>/cgroup` text of each root, when each child has a cgroup of its own.
    cgroups: Vec<String>,
}

/// How far up a parent chain [`Spare::covers`] looks for a root.
const MAX_ANCESTRY: usize = 256;

impl Spare {
    /// Spares `roots` and what they started; `by_cgroup` when each child has its own cgroup.
    pub fn of(roots: Vec<libc::pid_t>, by_cgroup: bool) -> Spare {
        let cgroups = match by_cgroup {
            true => roots.iter().filter_map(|&pid| proc_cgroup(pid)).collect(),
            false => Vec::new(),
        };
        Spare { roots, cgroups }
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Whether `pid` is a root, one of their descendants, or in one of their cgroups.
    pub fn covers(&self, pid: libc::pid_t) -> bool {
        if self.roots.is_empty() {
            return false;
        }
        if !self.cgroups.is_empty() && proc_cgroup(pid).is_some_and(|c| self.cgroups.contains(&c)) {
            return true;
        }
        let mut current = pid;
        for _ in 0..MAX_ANCESTRY {
            if self.roots.contains(&current) {
                return true;
            }
            match crate::sys::proc_stat_fields(current) {
                Some((_, parent, _)) if parent > 1 => current = parent,
                _ => return false,
            }
        }
        false
    }
}

fn proc_cgroup(pid: libc::pid_t) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// A process that is gone (reaped or exited) is not an error for its signaller.
fn ignore_gone(result: Result<(), Errno>) -> Result<(), Errno> {
    match result {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_init_everyone_or_ourselves() {
        // SAFETY: getpid and getpgrp have no preconditions.
        let (own_pid, own_group) = unsafe { (libc::getpid(), libc::getpgrp()) };
        let own_fd = crate::sys::pidfd_open(own_pid).unwrap();
        let fd = own_fd.as_raw_fd();
        for pid in [i32::MIN, -1, 0, 1, own_pid, own_group] {
            for signal in [0, libc::SIGKILL] {
                let process = Target::Process { pid, pidfd: fd };
                let group = Target::Group {
                    pgid: pid,
                    leader_pidfd: fd,
                };
                assert_eq!(send(process, signal), Err(Errno::EPERM), "pid {pid}");
                assert_eq!(send(group, signal), Err(Errno::EPERM), "group {pid}");
            }
        }
        assert!(!allowed(own_pid) && !allowed(1) && !allowed(0) && !allowed(-1));
    }

    #[test]
    fn bad_signals_are_refused() {
        let target = Target::Process {
            pid: 999_999,
            pidfd: -1,
        };
        assert_eq!(send(target, -1), Err(Errno::EINVAL));
        assert_eq!(send(target, 65), Err(Errno::EINVAL));
    }

    #[test]
    fn a_group_is_reached_after_its_leader_is_reaped() {
        // sh leads a new group, starts a background sleep and exits.
        let mut child = std::process::Command::new("/bin/sh");
        child.args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"]);
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        child.stdout(std::process::Stdio::piped());
        let child = child.spawn().unwrap();
        let leader = child.id() as libc::pid_t;
        let pidfd = crate::sys::pidfd_open(leader).unwrap();
        let output = child.wait_with_output().unwrap();
        let sleeper: libc::pid_t = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        let targets = Targets {
            pid: leader,
            pidfd,
            group: Some(Group {
                pgid: leader,
                leader: None,
            }),
            kill_group: true,
            cgroup: None,
            joiners: AtomicUsize::new(0),
        };
        assert!(
            targets.remains(&Spare::default()),
            "the background sleep lives on"
        );
        targets.signal(libc::SIGKILL, Reach::Drain).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::sys::proc_state(sleeper).is_some_and(|s| s != b'Z') {
            assert!(std::time::Instant::now() < deadline, "sleep survived");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!targets.remains(&Spare::default()));
    }

    #[test]
    fn a_spare_covers_what_its_roots_started_and_nothing_else() {
        use std::io::BufRead;
        let mut shell = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(shell.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let sleeper: libc::pid_t = line.trim().parse().unwrap();
        let root = shell.id() as libc::pid_t;
        let spare = Spare::of(vec![root], false);
        assert!(spare.covers(root) && spare.covers(sleeper));
        // SAFETY: getpid has no preconditions.
        assert!(!spare.covers(unsafe { libc::getpid() }));
        assert!(!Spare::default().covers(sleeper));
        // SAFETY: kill(2) on a child of this test that is still unreaped.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
        shell.wait().unwrap();
    }
}
