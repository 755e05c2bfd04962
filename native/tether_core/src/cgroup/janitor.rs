//! The cgroup janitor: a thread that makes child cgroups ahead of need and removes the ones
//! that emptied, so that neither `mkdir` nor `rmdir` in cgroupfs sits on a spawn's path.
//!
//! Why (measured, see docs/native-facts.md): each costs 50–100 µs of the event loop's thread,
//! and a child's exit is followed at once by its owner's next spawn, which waited behind the
//! `rmdir`. The janitor keeps [`SPARES`] empty cgroups ready (each with its directory open, for
//! `CLONE_INTO_CGROUP`) and removes what it is sent, in its own time.
//!
//! Lifetime: it lives while its [`Janitor`] does (the reactor's cgroup root) or any cgroup it
//! handed out can still be sent back for removal. When the root is let go, the spares nobody
//! took are removed, then every removal still coming, and the thread ends.

use super::{make, remove_tree, Fresh};
use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cgroups kept ready (and directories open): one in the janitor's hand, the rest offered. A
/// burst of spawns faster than the janitor makes them takes the rest from the event loop's own
/// `mkdir`, as before.
pub const SPARES: usize = 4;

/// After a failed `mkdir` (the tree is gone, a limit on descendants), the next try waits this
/// long; spawns meanwhile make their own cgroup and get its error.
const RETRY: Duration = Duration::from_secs(1);

/// The reactor's side: take a spare, send a cgroup back for removal.
pub struct Janitor {
    spares: Receiver<Fresh>,
    removals: Sender<PathBuf>,
}

impl std::fmt::Debug for Janitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Janitor")
            .field("spares", &self.spares.len())
            .finish()
    }
}

impl Janitor {
    /// Starts the janitor of the cgroups below `root`; `None` if no thread can be started
    /// (cgroups are then made and removed on the caller's thread).
    pub fn start(root: PathBuf) -> Option<Janitor> {
        let (spare_sender, spares) = bounded(SPARES - 1);
        let (removals, removal_receiver) = unbounded();
        let unclaimed = spares.clone();
        std::thread::Builder::new()
            .name("tether-cgroups".into())
            .spawn(move || run(&root, spare_sender, unclaimed, removal_receiver))
            .ok()?;
        Some(Janitor { spares, removals })
    }

    /// A cgroup made ahead, if one is ready.
    pub fn spare(&self) -> Option<Fresh> {
        self.spares.try_recv().ok()
    }

    /// Where a cgroup is sent to be removed once it is empty.
    pub fn removals(&self) -> Sender<PathBuf> {
        self.removals.clone()
    }
}

impl Drop for Janitor {
    /// Tells the thread to stop offering and to remove the spares nobody took. Done there, not
    /// here: a spare it was handing over as we looked would be in the channel after our last
    /// look, and dropped with it without its directory being removed.
    fn drop(&mut self) {
        let _ = self.removals.send(PathBuf::new());
    }
}

/// The thread: keeps one spare in hand and offers it while it serves removals. Each turn is
/// fenced: a panic is logged and the thread goes on.
/// `unclaimed` is the reactor's end of `spares`, to take back what it did not take once it
/// lets go (an empty path among the removals).
fn run(
    root: &Path,
    spares: Sender<Fresh>,
    unclaimed: Receiver<Fresh>,
    removals: Receiver<PathBuf>,
) {
    let mut state = State {
        ready: None,
        taking: true,
        retry_at: None,
    };
    loop {
        let turn = || state.turn(root, &spares, &unclaimed, &removals);
        match catch_unwind(AssertUnwindSafe(turn)) {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                eprintln!("tether: the cgroup janitor recovered from a panic");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

struct State {
    /// The spare in hand, not yet taken.
    ready: Option<Fresh>,
    /// Whether the reactor still takes spares.
    taking: bool,
    /// No `mkdir` before this, after a failed one.
    retry_at: Option<Instant>,
}

impl State {
    /// One wait and what it brought; `false` once nothing is left to do.
    fn turn(
        &mut self,
        root: &Path,
        spares: &Sender<Fresh>,
        unclaimed: &Receiver<Fresh>,
        removals: &Receiver<PathBuf>,
    ) -> bool {
        let now = Instant::now();
        if self.taking && self.ready.is_none() && self.retry_at.is_none_or(|at| now >= at) {
            match make(root) {
                Ok(fresh) => {
                    self.ready = Some(fresh);
                    self.retry_at = None;
                }
                Err(_) => self.retry_at = Some(now + RETRY),
            }
        }
        let mut select = Select::new();
        let removal = select.recv(removals);
        let offer = self.ready.is_some().then(|| select.send(spares));
        let operation = match self.retry_at.filter(|_| self.taking) {
            Some(at) => match select.select_timeout(at.saturating_duration_since(now)) {
                Ok(operation) => operation,
                Err(_) => return true,
            },
            None => select.select(),
        };
        match operation.index() {
            i if i == removal => match operation.recv(removals) {
                Ok(path) if path.as_os_str().is_empty() => {
                    // The reactor let go: nothing is offered from now on, and what it did not
                    // take (every spare sent is in the channel by now) is removed.
                    self.taking = false;
                    let left = self.ready.take().into_iter().chain(unclaimed.try_iter());
                    for fresh in left {
                        remove_tree(&fresh.cgroup.path);
                    }
                }
                Ok(path) => remove_tree(&path),
                Err(_) => {
                    // Nothing can be sent any more: the root and every cgroup are gone.
                    if let Some(fresh) = self.ready.take() {
                        remove_tree(&fresh.cgroup.path);
                    }
                    return false;
                }
            },
            i if Some(i) == offer => {
                let Some(fresh) = self.ready.take() else {
                    return true;
                };
                // It cannot fail (we hold a receiver, `unclaimed`); if it did, the spare's
                // directory would still be removed, never dropped with it.
                if let Err(unsent) = operation.send(spares, fresh) {
                    remove_tree(&unsent.into_inner().cgroup.path);
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup of our own to make children in, where cgroup2 is writable here.
    fn scratch(name: &str) -> Option<PathBuf> {
        let base = super::super::default_base().ok()?;
        let dir = base.join(format!("tether-janitor-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(dir)
    }

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn children(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    }

    #[test]
    fn makes_spares_removes_what_it_is_sent_and_cleans_up_when_dropped() {
        let Some(dir) = scratch("pool") else {
            return;
        };
        let janitor = Janitor::start(dir.clone()).expect("a thread");
        // The pool fills up to SPARES (one in the janitor's hand) and no further.
        assert!(wait_until(|| children(&dir) == SPARES));
        let mut spare = None;
        assert!(wait_until(|| {
            spare = janitor.spare();
            spare.is_some()
        }));
        let spare = spare.unwrap();
        assert!(spare.cgroup.path.starts_with(&dir) && spare.cgroup.path.is_dir());
        assert!(spare.dir.is_some());
        // Taken: it is replaced.
        assert!(wait_until(|| children(&dir) == SPARES + 1));
        // Sent back: removed.
        janitor.removals().send(spare.cgroup.path.clone()).unwrap();
        assert!(wait_until(|| !spare.cgroup.path.exists()));
        // Let go: every spare is removed, and a removal sent later still is.
        let mut taken = None;
        assert!(wait_until(|| {
            taken = janitor.spare();
            taken.is_some()
        }));
        let taken = taken.unwrap();
        let removals = janitor.removals();
        drop(janitor);
        assert!(wait_until(|| children(&dir) == 1));
        assert!(taken.cgroup.path.is_dir());
        removals.send(taken.cgroup.path.clone()).unwrap();
        drop(removals);
        assert!(wait_until(|| children(&dir) == 0));
        std::fs::remove_dir(&dir).unwrap();
    }

    /// Dropped while its thread hands over a spare, the janitor still removes every one
    /// (a spare sent after the drop's last look used to stay, one directory per reconfiguration).
    #[test]
    fn no_spare_is_left_behind_by_a_drop() {
        let Some(dir) = scratch("race") else {
            return;
        };
        let mut leaked = 0;
        for _ in 0..300 {
            let janitor = Janitor::start(dir.clone()).expect("a thread");
            assert!(wait_until(|| children(&dir) == SPARES));
            drop(janitor);
            if !wait_until(|| children(&dir) == 0) {
                leaked += 1;
                remove_tree(&dir);
                std::fs::create_dir(&dir).unwrap();
            }
        }
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(leaked, 0, "spares left after a drop");
    }
}
