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
    /// Give the child a pipe on stdin that we write (else stdin is `/dev/null`).
    pub stdin: bool,
    /// Pipe stdout back (else it goes to `/dev/null`).
    pub stdout: bool,
    /// Pipe stderr back (else it goes to `/dev/null`).
    pub stderr: bool,
    /// Time between the polite signal of a stop and SIGKILL.
    pub kill_timeout: Duration,
    /// Put the child in a new process group and address the group on stop and kill.
    pub kill_group: bool,
    /// Let the child outlive its owner and the VM: no SIGKILL from the kernel when the VM dies
    /// (`PR_SET_PDEATHSIG`), no guard by the watchdog, no stop when its owner or handle goes.
    pub detach: bool,
    /// Size requested for the output pipes (best effort; 0 keeps the kernel default).
    pub pipe_size: usize,
}

impl Command {
    /// A command running `argv` with the defaults: no pipes, own process group, not detached
    /// (dies with the VM), 5 s kill timeout.
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
            stdin: false,
            stdout: false,
            stderr: false,
            kill_timeout: Duration::from_secs(5),
            kill_group: true,
            detach: false,
            pipe_size: DEFAULT_PIPE_SIZE,
        }
    }

    /// The program that `execve` receives (before the `PATH` search).
    pub fn program(&self) -> &[u8] {
        self.executable
            .as_deref()
            .or_else(|| self.argv.first().map(Vec::as_slice))
            .unwrap_or(&[])
    }
}

/// 1 MiB pipes quadruple throughput from a fast producer (see NATIVE_FACTS.md); the kernel
/// allocates the pages only as they fill.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;
