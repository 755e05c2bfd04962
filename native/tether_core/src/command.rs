//! What to run, as plain data. Validation of user input happens in Elixir; this module only
//! refuses what could not be represented for `execve` (NUL bytes, an empty argv).

use std::time::Duration;

/// One change to the environment the child inherits, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    /// Start from an empty environment.
    Clear,
    /// Set `name` to `value`.
    Set(Vec<u8>, Vec<u8>),
    /// Remove `name`.
    Unset(Vec<u8>),
}

/// The child's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `/dev/null`.
    Null,
    /// A pipe the reactor writes (`Reactor::write`).
    Pipe,
    /// Closed: the child starts with fd 0 closed.
    Close,
    /// A file, opened read-only.
    File(Vec<u8>),
    /// A descriptor of ours, which the child gets as its stdin (the watchdog's socket).
    Fd(i32),
}

/// Where a child's stdout or stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `/dev/null`.
    Null,
    /// A pipe the reactor reads and reports to the listener.
    Pipe,
    /// Closed: the child starts with the descriptor closed.
    Close,
    /// A file: created with `mode` if missing, truncated unless `append`.
    File {
        path: Vec<u8>,
        append: bool,
        mode: u32,
    },
    /// The other stream's destination (stderr into stdout or the reverse), so the two
    /// interleave exactly as written.
    Other,
    /// The VM's own descriptor (what `System.cmd` does with stderr).
    Inherit,
}

/// Which process group the child joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A new group led by the child (`setpgid(0, 0)`).
    New,
    /// An existing group.
    Join(i32),
    /// The VM's group.
    Inherit,
}

/// A pseudo-terminal for the child's stdin, stdout and stderr (unless those are redirected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pty {
    pub rows: u16,
    pub cols: u16,
    /// Whether the terminal echoes input (off by default, as programs driven by code expect).
    pub echo: bool,
}

/// One step of a stop: do `action`, then wait `wait` before the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    pub action: StopAction,
    pub wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAction {
    /// Send a signal (to the group when the child leads one).
    Signal(i32),
    /// Run `/bin/sh -c command` with `CHILD_PID` in its environment.
    Command(Vec<u8>),
}

/// A resource limit: `setrlimit(resource, soft, hard)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// The Linux capabilities a child runs with (`capabilities(7)`): its effective, permitted,
/// inheritable and ambient sets, so that they survive its `execve` (and pass to what it runs in
/// turn). A child that stays root also has the others dropped from its bounding set, so that
/// neither it nor a setuid program it runs gets them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capabilities {
    /// Exactly these: bit `n` is capability `n` (`CAP_KILL` is 5). The spawning process must
    /// hold them (permitted, and in its bounding set), else the spawn fails with `EPERM`.
    Only(u64),
    /// Every capability the spawning process holds and may pass on (permitted and bounding).
    All,
}

impl Capabilities {
    /// The set the child ends with, given the spawning process's permitted and bounding sets
    /// (as masks). `Only` is not narrowed: asking for what is not held must fail, not shrink.
    pub fn resolve(self, permitted: u64, bounding: u64) -> u64 {
        match self {
            Capabilities::Only(mask) => mask,
            Capabilities::All => permitted & bounding,
        }
    }

    /// What a child that stays root drops from its bounding set: the rest of it, for an explicit
    /// set (`All` keeps what it has).
    pub fn bounding_drops(self, bounding: u64) -> u64 {
        match self {
            Capabilities::Only(mask) => bounding & !mask,
            Capabilities::All => 0,
        }
    }
}

/// A command to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `argv[0]` and the arguments.
    pub argv: Vec<Vec<u8>>,
    /// The program to execute when it is not `argv[0]`. Without a `/` it is searched on `PATH`.
    pub executable: Option<Vec<u8>>,
    /// Changes to the inherited environment.
    pub env: Vec<EnvChange>,
    /// Working directory.
    pub cwd: Option<Vec<u8>>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    pub pty: Option<Pty>,
    pub group: Group,
    /// Stop and kill address the child's process group rather than the child alone.
    pub kill_group: bool,
    /// How a stop proceeds. SIGKILL always ends it (appended when missing).
    pub stop: Vec<StopStep>,
    /// Let the child outlive its owner and the VM: no SIGKILL from the kernel when the VM dies
    /// (`PR_SET_PDEATHSIG`), no guard by the watchdog, no stop when its owner or handle goes.
    pub detach: bool,
    /// Size requested for the pipes (best effort; 0 keeps the kernel default).
    pub pipe_size: usize,
    pub nice: Option<i32>,
    /// Run as this user (uid, gid and supplementary groups): needs root.
    pub user: Option<Vec<u8>>,
    /// The capabilities the child runs with (`None`: what `execve` gives its user, as usual:
    /// all of the bounding set for root, none for another user).
    pub capabilities: Option<Capabilities>,
    pub rlimits: Vec<Rlimit>,
    /// After the child's exit, leave what it started running until its owner dies (instead of
    /// stopping it with the child's stop sequence).
    pub keep_background: bool,
    /// cgroup interface files to write in the child's cgroup (`memory.max`, `pids.max`…).
    pub cgroup_limits: Vec<(String, String)>,
    /// Stop the child once it has been silent (no output) this long.
    pub idle_timeout: Option<Duration>,
    /// Stop the child once it has written more than this many bytes of output.
    pub max_output: Option<u64>,
    /// Flow control of stdout: messages it may send before going passive (`None`: no limit).
    pub stdout_credit: Option<u64>,
    /// Flow control of stderr.
    pub stderr_credit: Option<u64>,
}

impl Command {
    /// A command running `argv` with the defaults: no pipes, own process group, not detached
    /// (dies with the VM), SIGTERM then SIGKILL after 5 s on stop.
    pub fn new<I, S>(argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<Vec<u8>>,
    {
        Command {
            argv: argv.into_iter().map(Into::into).collect(),
            executable: None,
            env: Vec::new(),
            cwd: None,
            stdin: Input::Null,
            stdout: Output::Null,
            stderr: Output::Null,
            pty: None,
            group: Group::New,
            kill_group: true,
            stop: kill_after(Duration::from_secs(5)),
            detach: false,
            pipe_size: DEFAULT_PIPE_SIZE,
            nice: None,
            user: None,
            capabilities: None,
            rlimits: Vec::new(),
            keep_background: false,
            cgroup_limits: Vec::new(),
            idle_timeout: None,
            max_output: None,
            stdout_credit: None,
            stderr_credit: None,
        }
    }

    /// The program that `execve` receives (before the `PATH` search).
    pub fn program(&self) -> &[u8] {
        self.executable
            .as_deref()
            .or_else(|| self.argv.first().map(Vec::as_slice))
            .unwrap_or(&[])
    }

    /// Whether the child leads a process group of its own (a new group, or a pty session).
    pub fn leads_group(&self) -> bool {
        self.pty.is_some() || self.group == Group::New
    }

    /// The stop sequence as it runs: the given steps, then SIGKILL if they do not end with it.
    pub fn stop_sequence(&self) -> Vec<StopStep> {
        let mut steps = self.stop.clone();
        if steps.last().map(|s| &s.action) != Some(&StopAction::Signal(libc::SIGKILL)) {
            steps.push(StopStep {
                action: StopAction::Signal(libc::SIGKILL),
                wait: Duration::ZERO,
            });
        }
        steps
    }
}

/// The default stop: SIGTERM, then SIGKILL after `timeout`.
pub fn kill_after(timeout: Duration) -> Vec<StopStep> {
    vec![
        StopStep {
            action: StopAction::Signal(libc::SIGTERM),
            wait: timeout,
        },
        StopStep {
            action: StopAction::Signal(libc::SIGKILL),
            wait: Duration::ZERO,
        },
    ]
}

/// The resource number of an rlimit name (`"nofile"`, `"as"`, `"cpu"`, `"core"`, …).
pub fn rlimit_resource(name: &str) -> Option<i32> {
    let resource = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(resource as i32)
}

/// 1 MiB pipes quadruple throughput from a fast producer (see docs/native-facts.md); the kernel
/// allocates the pages only as they fill.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("nofile"), Some(libc::RLIMIT_NOFILE as i32));
        assert_eq!(rlimit_resource("core"), Some(libc::RLIMIT_CORE as i32));
        assert_eq!(rlimit_resource("bogus"), None);
    }

    #[test]
    fn capability_sets() {
        const KILL: u64 = 1 << 5;
        const NET_BIND_SERVICE: u64 = 1 << 10;
        const SYS_RESOURCE: u64 = 1 << 24;
        // 41 capabilities, as on Linux 5.9+ (CAP_CHECKPOINT_RESTORE = 40), minus sys_resource.
        let bounding = ((1u64 << 41) - 1) & !SYS_RESOURCE;
        let permitted = bounding;
        let wanted = Capabilities::Only(KILL | NET_BIND_SERVICE);
        assert_eq!(wanted.resolve(permitted, bounding), KILL | NET_BIND_SERVICE);
        assert_eq!(wanted.resolve(permitted, bounding), 0x420);
        assert_eq!(
            wanted.bounding_drops(bounding),
            bounding & !(KILL | NET_BIND_SERVICE)
        );
        // Not narrowed to what is held: the kernel refuses it, the spawn fails.
        assert_eq!(
            Capabilities::Only(SYS_RESOURCE).resolve(permitted, bounding),
            SYS_RESOURCE
        );
        assert_eq!(Capabilities::Only(0).resolve(permitted, bounding), 0);
        assert_eq!(Capabilities::Only(0).bounding_drops(bounding), bounding);
        // All: what is held and may be passed on.
        assert_eq!(Capabilities::All.resolve(permitted, bounding), bounding);
        assert_eq!(Capabilities::All.resolve(KILL, bounding), KILL);
        assert_eq!(
            Capabilities::All.resolve(KILL | SYS_RESOURCE, bounding),
            KILL
        );
        assert_eq!(Capabilities::All.bounding_drops(bounding), 0);
    }

    #[test]
    fn stop_sequences_always_end_with_sigkill() {
        let mut command = Command::new(["x"]);
        assert_eq!(command.stop_sequence(), kill_after(Duration::from_secs(5)));
        command.stop = vec![StopStep {
            action: StopAction::Signal(libc::SIGINT),
            wait: Duration::from_secs(2),
        }];
        let actions: Vec<_> = command
            .stop_sequence()
            .into_iter()
            .map(|s| s.action)
            .collect();
        assert_eq!(
            actions,
            vec![
                StopAction::Signal(libc::SIGINT),
                StopAction::Signal(libc::SIGKILL)
            ]
        );
    }
}
