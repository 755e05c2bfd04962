//! What the reactor tells the owner of a child, and the types it tells it with.

use crate::spawn::SpawnError;
use crate::status::ExitStatus;
use nix::errno::Errno;
use std::time::Duration;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where the events of one child go. Called on the reactor thread only, in this order:
/// `spawned` once; then any number of `output`; then `exited` once (only after `Ok`).
pub trait Listener: Send {
    fn spawned(&mut self, result: Result<u32, SpawnError>);
    fn output(&mut self, stream: Stream, os_pid: u32, data: &[u8]);
    /// Reads one chunk of at most `len` bytes (what the pipe holds) by calling `read` once, and
    /// delivers it like `output`; returns what `read` returned. Override it to read straight
    /// into memory the listener sends on (no copy); the default reads into `scratch`, which
    /// is at least `len` bytes long.
    fn read_output(
        &mut self,
        stream: Stream,
        os_pid: u32,
        len: usize,
        scratch: &mut [u8],
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let buffer = &mut scratch[..len];
        let n = read(buffer)?;
        if n > 0 {
            self.output(stream, os_pid, &buffer[..n]);
        }
        Ok(n)
    }
    /// A flow-controlled stream used its last credit: nothing more is read until `activate`.
    fn passive(&mut self, _stream: Stream, _os_pid: u32) {}
    /// After `exited`: the child's background jobs are kept (`keep_background`) and live on.
    /// Arrange for `Reactor::stop_left_behind(id)` when the owner dies, and return true; false
    /// (the default) has them stopped now.
    fn keep_while_owner_lives(&mut self, _id: u64) -> bool {
        false
    }
    /// `None` when the status cannot be known (an adopted process, or the kernel reaped the
    /// child because SIGCHLD was ignored). `counters` are the child's final byte counts.
    fn exited(
        &mut self,
        os_pid: u32,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
        counters: Counters,
    );
}

/// Resource usage of an exited child (`wait4`'s rusage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub user_time: Duration,
    pub system_time: Duration,
    /// Maximum resident set size, in bytes.
    pub max_rss: u64,
    /// CPU time of everything that ran in the child's cgroup (with cgroups).
    pub tree_cpu_usec: Option<u64>,
    /// Peak memory of the child's cgroup (where the memory controller is enabled).
    pub tree_memory_peak: Option<u64>,
}

/// Bytes to write to a child's stdin, owned by whoever produced them (the NIF keeps Erlang
/// binaries alive without copying them).
pub type Bytes = Box<dyn AsRef<[u8]> + Send>;

/// Counters of one child, as `info` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdin_bytes: u64,
    /// The child wrote more than its `max_output`: the first `max_output` bytes were delivered,
    /// nothing after them.
    pub output_capped: bool,
}
