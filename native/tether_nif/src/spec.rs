//! The run spec, as `Tether.Options` builds it (already validated, typed values only).

use crate::atoms;
use rustler::{Binary, LocalPid, NifMap, NifResult, Term};
use std::time::Duration;
use tether_core::{Command, EnvChange};

#[derive(NifMap)]
pub struct Spec<'a> {
    /// Lists are decoded by [`proper_list`]: rustler's `Vec` decoder panics on improper lists.
    argv: Term<'a>,
    executable: Option<Binary<'a>>,
    env: Term<'a>,
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

/// The elements of a proper list, each decoded; `BadArg` for anything else (never a panic).
pub fn proper_list<'a, T: rustler::Decoder<'a>>(mut term: Term<'a>) -> NifResult<Vec<T>> {
    let mut items = Vec::new();
    while !term.is_empty_list() {
        let (head, tail) = term.list_get_cell()?;
        items.push(head.decode()?);
        term = tail;
    }
    Ok(items)
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
        let argv: Vec<Binary> = proper_list(self.argv)?;
        let env: Vec<Term> = proper_list(self.env)?;
        let mut command = Command::new(argv.iter().map(|a| a.to_vec()));
        command.executable = self.executable.map(|e| e.to_vec());
        command.env = env.into_iter().map(env_change).collect::<Result<_, _>>()?;
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
