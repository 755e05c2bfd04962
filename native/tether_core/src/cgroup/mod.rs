//! cgroup v2 containment: a cgroup per child, so nothing it starts escapes — not a `setsid`
//! daemon, not a double fork, not a process that changed its group.
//!
//! Layout: `<base>/tether-<vm os_pid>-<random>/c<n>` (random: VMs in other pid namespaces may
//! have the same os_pid, and a tree is never shared; `n` counts the VM's child cgroups), where
//! `<base>` is the VM's own cgroup in the cgroup2 hierarchy (found in `/proc/self/mountinfo` and
//! `/proc/self/cgroup`) or a configured directory. The VM itself stays where it is. The child is
//! in its cgroup before `execve` (cloned into it, or it writes `0` to `cgroup.procs` between
//! `clone` and `execve`), so everything it starts is born inside.
//! Stopping a child kills its whole cgroup (`cgroup.kill`, Linux ≥ 5.14; before that, every
//! process listed in `cgroup.procs`, through a pidfd checked to be in the cgroup). When the VM
//! dies, the watchdog kills that tree, which kills every child cgroup at once, and removes it.
//!
//! Zombies do not count as members (`cgroup.events` says `populated 0` once every process has
//! exited, reaped or not), and an empty cgroup is removed.
//!
//! Cgroups are made ahead and removed later by the [`janitor`] thread, off the spawn path; a
//! child is cloned straight into its cgroup (`CLONE_INTO_CGROUP`) where the kernel can, which
//! spares the migration that a write to `cgroup.procs` is.

mod janitor;

use crossbeam_channel::Sender;
use janitor::Janitor;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How cgroups are chosen (`config :tether, cgroups:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Use them where the hierarchy is writable, else run without.
    Auto,
    /// Use them or fail.
    Required,
    /// Never.
    Off,
}

/// Per-child limits, each a cgroup interface file and its value (`memory.max`, `pids.max`,
/// `cpu.max`).
pub type Limits = Vec<(String, String)>;

/// The directory every child cgroup of this VM lives in.
#[derive(Debug)]
pub struct Root {
    pub path: PathBuf,
    /// Controllers enabled for the children (`memory`, `pids`, `cpu`…), for limits.
    pub controllers: Vec<String>,
    /// Makes cgroups ahead and removes emptied ones (`None`: no thread, done here).
    janitor: Option<Janitor>,
}

/// One child's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
    /// `<path>/cgroup.procs`, for the child to write itself into before `execve` (where it
    /// cannot be cloned into the cgroup).
    pub procs: CString,
    /// The janitor that removes it, when it was handed out by one.
    removal: Option<Sender<PathBuf>>,
    /// Whether the memory controller is enabled for it (`memory.peak` exists).
    memory: bool,
}

/// A new, empty cgroup, with its directory open for `CLONE_INTO_CGROUP` (`None` where it
/// could not be opened: the child then joins by writing to `cgroup.procs`).
#[derive(Debug)]
pub struct Fresh {
    pub cgroup: Cgroup,
    pub dir: Option<OwnedFd>,
}

/// Names child cgroups `c<n>`, unique in this VM whichever root they are made under (a root
/// configured again is the same tree).
static NEXT_NAME: AtomicU64 = AtomicU64::new(1);

/// Makes a new, empty cgroup below `root` and opens its directory.
fn make(root: &Path) -> Result<Fresh, Errno> {
    let path = root.join(format!("c{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed)));
    let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| Errno::EINVAL)?;
    let dir_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    std::fs::create_dir(&path).map_err(io_errno)?;
    // SAFETY: a NUL-terminated path; the fd is owned just below.
    let fd = unsafe {
        libc::open(
            dir_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    Ok(Fresh {
        cgroup: Cgroup {
            path,
            procs,
            removal: None,
            memory: false,
        },
        // SAFETY: a fresh descriptor owned by nobody else.
        dir: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
    })
}

/// Usage of a cgroup's whole tree, read before it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// `cpu.stat`'s `usage_usec`: CPU time of every process that ever ran in it.
    pub cpu_usec: Option<u64>,
    /// `memory.peak`, where the memory controller is enabled.
    pub memory_peak: Option<u64>,
}

/// Where cgroup2 is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}

/// The VM's own cgroup2 path (`0::/path`), from `/proc/self/cgroup`.
fn own_cgroup(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The base directory for `tether-<pid>`: the configured one, or the VM's own cgroup.
pub fn default_base() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 hierarchy is mounted")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own_cgroup(&cgroup).ok_or("this process is in no cgroup2 cgroup")?;
    Ok(mount.join(own.trim().trim_start_matches('/')))
}

/// `CGROUP2_SUPER_MAGIC` from `<linux/magic.h>`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `path` is a directory of a cgroup v2 hierarchy (a v1 hierarchy has `cgroup.procs`
/// too, but neither `cgroup.events` nor `cgroup.kill`: it could not contain anything).
fn is_cgroup2(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is a valid value.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid statfs to fill.
    let ok = unsafe { libc::statfs(cpath.as_ptr(), &mut info) } == 0;
    ok && info.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// 64 random bits, as hex.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is valid for 8 bytes; getrandom fills what it returns.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = nanos.to_ne_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Root {
    /// Creates this VM's tree, `<base>/tether-<our pid>-<random>`, and enables for its
    /// children every controller it can. `base` must be an absolute cgroup v2 directory.
    pub fn create(base: &Path) -> Result<Root, String> {
        if !base.is_absolute() || !is_cgroup2(base) {
            return Err(format!("{} is not a cgroup2 directory", base.display()));
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let path = base.join(format!("tether-{pid}-{}", nonce()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Root::at(path))
    }

    /// The tree at `path`, made earlier by [`Root::create`] in this VM.
    pub fn at(path: PathBuf) -> Root {
        let available =
            std::fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
        let controllers: Vec<String> = available
            .split_whitespace()
            .filter(|c| ["cpu", "memory", "pids"].contains(c))
            .filter(|c| {
                std::fs::write(path.join("cgroup.subtree_control"), format!("+{c}")).is_ok()
            })
            .map(String::from)
            .collect();
        let janitor = Janitor::start(path.clone());
        Root {
            path,
            controllers,
            janitor,
        }
    }

    /// A new, empty cgroup for a child (one made ahead when the janitor has one ready), with
    /// `limits` applied. A limit whose controller is not enabled here is refused with
    /// `ENOTSUP` (nothing is silently ignored).
    pub fn child(&self, limits: &Limits) -> Result<Fresh, Errno> {
        let janitor = self.janitor.as_ref();
        let mut fresh = match janitor.and_then(Janitor::spare) {
            Some(spare) => spare,
            None => make(&self.path)?,
        };
        fresh.cgroup.removal = janitor.map(Janitor::removals);
        fresh.cgroup.memory = self.controllers.iter().any(|c| c == "memory");
        for (file, value) in limits {
            let target = fresh.cgroup.path.join(file);
            if !target.exists() {
                fresh.cgroup.remove();
                return Err(Errno::ENOTSUP);
            }
            if let Err(e) = std::fs::write(&target, value) {
                fresh.cgroup.remove();
                return Err(io_errno(e));
            }
        }
        Ok(fresh)
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Removes the cgroup at `path` and every cgroup below it (a child may make its own, a nested
/// VM makes a tree), deepest first. Directories that still hold live processes stay.
pub fn remove_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}

impl Cgroup {
    /// Whether a live process is in it.
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .map(|events| events.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// The pids it lists (live processes; a zombie may still be listed for a moment).
    pub fn members(&self) -> Vec<libc::pid_t> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether `pid` is in this cgroup now.
    pub fn contains(&self, pid: libc::pid_t) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        let Some(own) = own_cgroup(&text) else {
            return false;
        };
        self.path.ends_with(own.trim().trim_start_matches('/'))
    }

    /// Its `cgroup.events`, opened for epoll (`EPOLLPRI` when `populated` changes).
    pub fn events(&self) -> Result<OwnedFd, Errno> {
        let path = CString::new(self.path.join("cgroup.events").as_os_str().as_bytes())
            .map_err(|_| Errno::EINVAL)?;
        // SAFETY: `path` is NUL-terminated; the fd is owned just below.
        let fd = crate::sys::cvt(unsafe {
            libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
        })?;
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// CPU time and peak memory of everything that ran in it.
    pub fn stats(&self) -> Stats {
        let read = |file: &str| std::fs::read_to_string(self.path.join(file)).ok();
        Stats {
            cpu_usec: read("cpu.stat").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            }),
            memory_peak: self
                .memory
                .then(|| read("memory.peak"))
                .flatten()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// Removes it and the cgroups made below it (they must be empty of live processes): by
    /// its janitor, later, or here and now.
    pub fn remove(&self) {
        let sent = self
            .removal
            .as_ref()
            .is_some_and(|janitor| janitor.send(self.path.clone()).is_ok());
        if !sent {
            remove_tree(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mount_and_our_cgroup() {
        let mountinfo = "24 1 0:22 / /proc rw - proc proc rw\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("24 1 0:22 / /proc rw - proc proc rw\n"), None);
        assert_eq!(
            own_cgroup("4:memory:/x\n0::/user.slice/a\n"),
            Some("/user.slice/a")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }
}
