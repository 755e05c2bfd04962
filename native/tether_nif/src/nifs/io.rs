//! A child's stdin, its terminal and its output's flow control.

use crate::encode::{ok_or_no_process, write_result};
use crate::listener::{self};
use crate::{atoms, bytes, reactor};
use rustler::{Atom, Encoder, Env, LocalPid, Term};

/// Writes a binary to the child's stdin, or queues it (no copy, never blocks).
#[rustler::nif]
fn write<'a>(env: Env<'a>, os_pid: u32, data: Term<'a>) -> rustler::NifResult<Term<'a>> {
    let bytes = bytes::keep(data)?;
    Ok(write_result(env, reactor().write(os_pid, Box::new(bytes))))
}

/// Closes the child's stdin after what is queued.
#[rustler::nif]
fn close_stdin(env: Env, os_pid: u32) -> Term {
    write_result(env, reactor().close_stdin(os_pid))
}

/// Asks to be told when the child's stdin queue is written out:
/// `{:tether_stdin_flushed, ref, written?}` reaches `reply_to`.
#[rustler::nif]
fn stdin_flushed<'a>(
    env: Env<'a>,
    os_pid: u32,
    reply_to: LocalPid,
    reference: Term<'a>,
) -> Term<'a> {
    let reply = listener::Reply::new(reply_to, reference);
    let result = reactor().when_stdin_flushed(
        os_pid,
        Box::new(move |written| {
            reply.send(atoms::tether_stdin_flushed(), |env| written.encode(env));
        }),
    );
    write_result(env, result)
}

#[rustler::nif]
fn winsz(env: Env, os_pid: u32, rows: u16, cols: u16) -> Term {
    let result = reactor()
        .set_window_size(os_pid, rows, cols)
        .map(|()| atoms::ok());
    ok_or_no_process(env, result)
}

/// Grants flow-control credit: `stream` is `:stdout`, `:stderr` or nil (both); `credit` a
/// count of messages, or nil to read freely.
#[rustler::nif]
fn activate(
    env: Env,
    os_pid: u32,
    stream: Option<Atom>,
    credit: Option<u64>,
) -> rustler::NifResult<Term> {
    // `nil` is an atom, so it decodes as `Some(nil)`.
    let stream = match stream {
        None => None,
        Some(s) if s == atoms::nil() => None,
        Some(s) if s == atoms::stdout() => Some(tether_core::Stream::Stdout),
        Some(s) if s == atoms::stderr() => Some(tether_core::Stream::Stderr),
        Some(_) => return Err(rustler::Error::BadArg),
    };
    let result = reactor()
        .activate(os_pid, stream, credit)
        .map(|()| atoms::ok());
    Ok(ok_or_no_process(env, result))
}
