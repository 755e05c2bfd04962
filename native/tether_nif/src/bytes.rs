//! Erlang binaries handed to the reactor for a child's stdin without copying them.

use rustler::{Binary, NifResult, OwnedEnv, Term};

/// An Erlang binary kept alive by an environment of its own. `enif_make_copy` of a reference
/// counted binary shares its data, so even a 1 GiB binary costs no copy and no scheduler time.
pub struct BeamBytes {
    _env: OwnedEnv,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes belong to a binary held by `_env`, an OwnedEnv (which is Send); they are
// immutable and only read, by one thread at a time (the reactor).
unsafe impl Send for BeamBytes {}

impl AsRef<[u8]> for BeamBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` describe the binary kept alive by `_env` until we drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Keeps the binary `term` alive outside the calling process's heap.
pub fn keep(term: Term) -> NifResult<BeamBytes> {
    let env = OwnedEnv::new();
    let saved = env.save(term);
    let (ptr, len) = env.run(|env| {
        let binary: Binary = saved.load(env).decode()?;
        Ok::<_, rustler::Error>((binary.as_slice().as_ptr(), binary.len()))
    })?;
    Ok(BeamBytes {
        _env: env,
        ptr,
        len,
    })
}
