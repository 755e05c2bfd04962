//! The run spec, as `Tether.Options` builds it (already validated, typed values only).

use crate::atoms;
use rustler::{Binary, LocalPid, NifMap, NifResult, Term};
use std::time::Duration;
use tether_core::{Command, EnvChange};

#[derive(NifMap)]
pub struct Spec<'a> {
    argv: Vec<Binary<'a>>,
    executable: Option<Binary<'a>>,
    env: Vec<Term<'a>>,
    cd: Option<Binary<'a>>,
    stdout: Option<LocalPid>,
    stderr: Option<LocalPid>,
    monitor: Option<LocalPid>,
    kill_timeout_ms: u64,
    kill_group: bool,
    detach: bool,
}

/// Where one child's events go.
pub struct Routes {
    pub process: LocalPid,
    pub stdout: Option<LocalPid>,
    pub stderr: Option<LocalPid>,
    pub monitor: Option<LocalPid>,
}

fn env_change(term: Term) -> NifResult<EnvChange> {
    if term.decode::<rustler::Atom>().ok() == Some(atoms::clear()) {
        return Ok(EnvChange::Clear);
    }
    let (name, value): (Binary, Option<Binary>) = term.decode()?;
    Ok(match value {
        Some(value) => EnvChange::Set(name.to_vec(), value.to_vec()),
        None => EnvChange::Unset(name.to_vec()),
    })
}

impl Spec<'_> {
    pub fn into_command(self, process: LocalPid) -> NifResult<(Command, Routes)> {
        let mut command = Command::new(self.argv.iter().map(|a| a.to_vec()));
        command.executable = self.executable.map(|e| e.to_vec());
        command.env = self
            .env
            .into_iter()
            .map(env_change)
            .collect::<Result<_, _>>()?;
        command.cwd = self.cd.map(|d| d.to_vec());
        command.stdout = self.stdout.is_some();
        command.stderr = self.stderr.is_some();
        command.kill_timeout = Duration::from_millis(self.kill_timeout_ms);
        command.kill_group = self.kill_group;
        command.detach = self.detach;
        let routes = Routes {
            process,
            stdout: self.stdout,
            stderr: self.stderr,
            monitor: self.monitor,
        };
        Ok((command, routes))
    }
}
