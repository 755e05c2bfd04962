//! Sends a child's events to the BEAM, from the reactor thread.
//!
//! Messages to one receiver leave in the order the reactor produces them, so every output
//! message precedes the `:DOWN` of the same process.

use crate::atoms;
use crate::handle::OwnerWatch;
use crate::spec::Routes;
use rustler::env::SavedTerm;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedBinary, OwnedEnv, ResourceArc, Term};
use std::cell::RefCell;
use tether_core::{signal, Counters, Errno, ExitStatus, Listener, SpawnError, Stream, Usage};

thread_local! {
    /// One message environment for the reactor thread, cleared after every send.
    static ENV: RefCell<OwnedEnv> = RefCell::new(OwnedEnv::new());
}

/// Sends one message built by `build` (a dead receiver is not an error).
pub fn send<F>(to: &LocalPid, build: F)
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
{
    ENV.with(|env| {
        let _ = env.borrow_mut().send_and_clear(to, build);
    });
}

/// `:normal` | `{:exit_status, code}` | `{:signal, name_or_number, core_dumped}` | `:unknown`.
/// Exit code 0 and `success` are `:normal`.
pub fn encode_reason<'a>(env: Env<'a>, status: Option<ExitStatus>, success: i32) -> Term<'a> {
    match status {
        None => atoms::unknown().encode(env),
        Some(ExitStatus::Exited(code)) if code == 0 || code == success => {
            atoms::normal().encode(env)
        }
        Some(ExitStatus::Exited(code)) => (atoms::exit_status(), code).encode(env),
        Some(ExitStatus::Signaled {
            signal: signum,
            core_dumped,
        }) => {
            let name = signal::name(signum).and_then(|n| Atom::from_str(env, n).ok());
            match name {
                Some(name) => (atoms::signal(), name, core_dumped).encode(env),
                None => (atoms::signal(), signum, core_dumped).encode(env),
            }
        }
    }
}

/// `%{stdout_bytes: n, stderr_bytes: n, stdin_bytes: n, output_capped: boolean}` and, when known,
/// `user_time_us`, `system_time_us` and `max_rss` (bytes).
fn encode_exit_info(env: Env, usage: Option<Usage>, counters: Counters) -> Term {
    let map = rustler::term_map!(env, {
        atoms::stdout_bytes() => counters.stdout_bytes,
        atoms::stderr_bytes() => counters.stderr_bytes,
        atoms::stdin_bytes() => counters.stdin_bytes,
        atoms::output_capped() => counters.output_capped,
    });
    match usage {
        None => map,
        Some(usage) => map
            .map_put(atoms::user_time_us(), usage.user_time.as_micros() as u64)
            .and_then(|m| {
                m.map_put(
                    atoms::system_time_us(),
                    usage.system_time.as_micros() as u64,
                )
            })
            .and_then(|m| m.map_put(atoms::max_rss(), usage.max_rss))
            .and_then(|m| match usage.tree_cpu_usec {
                Some(us) => m.map_put(atoms::tree_cpu_us(), us),
                None => Ok(m),
            })
            .and_then(|m| match usage.tree_memory_peak {
                Some(bytes) => m.map_put(atoms::tree_memory_peak(), bytes),
                None => Ok(m),
            })
            .unwrap_or(map),
    }
}

/// A later answer to a caller that waits for it: `{tag, reference, payload}`, sent from the
/// reactor thread (the outcome of a spawn, counters, a flushed stdin).
pub struct Reply {
    to: LocalPid,
    env: OwnedEnv,
    reference: SavedTerm,
}

impl Reply {
    pub fn new(to: LocalPid, reference: Term) -> Reply {
        let env = OwnedEnv::new();
        let reference = env.save(reference);
        Reply { to, env, reference }
    }

    /// Sends `{tag, reference, payload(env)}` (a dead receiver is not an error).
    pub fn send<F>(mut self, tag: Atom, payload: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
    {
        let reference = self.reference;
        let _ = self.env.send_and_clear(&self.to, |env| {
            (tag, reference.load(env), payload(env)).encode(env)
        });
    }
}

pub struct BeamListener {
    routes: Routes,
    reply: Option<Reply>,
    /// The process whose life kept background jobs last: the one that called `run/2`, or the
    /// one `{:background_jobs, {:keep, pid}}` names.
    owner: LocalPid,
    /// While kept background jobs live on: the monitor of the owner.
    owner_watch: Option<ResourceArc<OwnerWatch>>,
}

impl BeamListener {
    pub fn new(routes: Routes, reply: Reply, owner: LocalPid) -> BeamListener {
        BeamListener {
            routes,
            reply: Some(reply),
            owner,
            owner_watch: None,
        }
    }
}

impl BeamListener {
    /// Where a stream's output goes, if anywhere.
    fn route(&self, stream: Stream) -> Option<LocalPid> {
        match stream {
            Stream::Stdout => self.routes.stdout,
            Stream::Stderr => self.routes.stderr,
        }
    }

    fn send_output(&self, stream: Stream, os_pid: u32, binary: OwnedBinary) {
        let Some(to) = self.route(stream) else { return };
        let tag = match stream {
            Stream::Stdout => atoms::stdout(),
            Stream::Stderr => atoms::stderr(),
        };
        send(&to, move |env| {
            (tag, os_pid, binary.release(env)).encode(env)
        });
    }
}

impl Listener for BeamListener {
    fn spawned(&mut self, result: Result<u32, SpawnError>) {
        fn outcome(env: Env, result: Result<u32, SpawnError>) -> Term {
            match result {
                Ok(os_pid) => (atoms::ok(), os_pid).encode(env),
                Err(error) => {
                    let reason = Atom::from_str(env, &crate::encode::spawn_error_name(&error))
                        .unwrap_or(atoms::error());
                    (atoms::error(), reason).encode(env)
                }
            }
        }
        // The caller first: it is the one waiting.
        if let Some(reply) = self.reply.take() {
            reply.send(atoms::tether_spawned(), |env| outcome(env, result));
        }
        send(&self.routes.process, |env| {
            (atoms::tether_spawned(), outcome(env, result)).encode(env)
        });
    }

    fn output(&mut self, stream: Stream, os_pid: u32, data: &[u8]) {
        if self.route(stream).is_some() {
            self.send_output(stream, os_pid, OwnedBinary::from_slice(data));
        }
    }

    /// Reads straight into the binary that is sent: no copy, whatever the chunk size.
    fn read_output(
        &mut self,
        stream: Stream,
        os_pid: u32,
        len: usize,
        scratch: &mut [u8],
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        if self.route(stream).is_none() {
            // Not routed anywhere: read only to drain the pipe.
            return read(&mut scratch[..len]);
        }
        let mut binary = OwnedBinary::new(len);
        let n = read(binary.as_mut_slice())?;
        if n > 0 {
            if n < len {
                binary.realloc_or_copy(n);
            }
            self.send_output(stream, os_pid, binary);
        }
        Ok(n)
    }

    fn passive(&mut self, stream: Stream, os_pid: u32) {
        let (tag, to) = match stream {
            Stream::Stdout => (atoms::stdout(), self.routes.stdout),
            Stream::Stderr => (atoms::stderr(), self.routes.stderr),
        };
        if let Some(to) = to {
            send(&to, move |env| {
                (atoms::tether_passive(), os_pid, tag).encode(env)
            });
        }
    }

    fn keep_while_owner_lives(&mut self, id: u64) -> bool {
        let Some(reactor) = crate::REACTOR.get() else {
            return false;
        };
        let watch = ResourceArc::new(OwnerWatch {
            id,
            reactor: reactor.clone(),
        });
        // From the reactor thread, without an env; fails if the owner is already gone.
        if watch.monitor(None, &self.owner).is_none() {
            return false;
        }
        self.owner_watch = Some(watch);
        true
    }

    fn exited(
        &mut self,
        os_pid: u32,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
        counters: Counters,
    ) {
        let process = self.routes.process;
        let success = self.routes.success_exit_code;
        if let Some(monitor) = self.routes.monitor {
            send(&monitor, |env| {
                let reason = encode_reason(env, status, success);
                (atoms::down(), os_pid, atoms::process(), process, reason).encode(env)
            });
        }
        send(&process, |env| {
            let info = encode_exit_info(env, usage, counters);
            (
                atoms::tether_exit(),
                os_pid,
                encode_reason(env, status, success),
                info,
            )
                .encode(env)
        });
    }
}
