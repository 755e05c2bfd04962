//! Rust results as Erlang terms: every error becomes an atom here, and only here.

use crate::atoms;
use rustler::{Encoder, Env, Term};
use tether_core::{SpawnError, WriteError};

pub(crate) fn no_process(env: Env) -> Term {
    (atoms::error(), atoms::no_process()).encode(env)
}

pub(crate) fn ok_or_no_process<T: Encoder>(
    env: Env,
    result: Result<T, tether_core::NoProcess>,
) -> Term {
    match result {
        Ok(value) => value.encode(env),
        Err(_) => no_process(env),
    }
}

pub(crate) fn write_result(env: Env, result: Result<(), WriteError>) -> Term {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(WriteError::NoProcess) => (atoms::error(), atoms::no_process()).encode(env),
        Err(WriteError::Closed) => (atoms::error(), atoms::closed()).encode(env),
    }
}

/// The reason atom of a spawn error (also of an errno, as `SpawnError::Os`): `enoent`,
/// `sigchld_ignored`, `max_children`, …
pub(crate) fn spawn_error_name(error: &SpawnError) -> String {
    match error {
        SpawnError::Os(errno) => format!("{errno:?}").to_ascii_lowercase(),
        SpawnError::SigchldIgnored => "sigchld_ignored".into(),
        SpawnError::InvalidCommand => "invalid_command".into(),
        SpawnError::UnknownUser => "unknown_user".into(),
        SpawnError::MaxChildren => "max_children".into(),
        SpawnError::Internal => "internal".into(),
        SpawnError::BadGroup => "bad_group".into(),
        SpawnError::CgroupLimitsUnavailable => "cgroup_limits_unavailable".into(),
    }
}
