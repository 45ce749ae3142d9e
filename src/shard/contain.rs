//! Third-party decoders (arrow, parquet, the image codecs) read bytes from files a user hands
//! us, and some of them panic on damaged input instead of returning an error. [`contain`] runs
//! such a call so that a panic becomes an error value naming what was read, and keeps the
//! panic's message off stderr (the error says it instead).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside it comes back as `Err(its message)`.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINED.replace(true);
    // The decoders' state is dropped with the panic; nothing of it is used afterwards.
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.set(outer);
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        format!(
            "the decoder failed on damaged data ({})",
            message.unwrap_or_else(|| "no message".into())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_values_pass_through() {
        assert_eq!(contain(|| 7), Ok(7));
        let err = contain(|| -> u8 { panic!("index out of bounds") }).unwrap_err();
        assert!(err.contains("index out of bounds"), "{err}");
        let v: Vec<u8> = Vec::new();
        let err = contain(|| v[3]).unwrap_err();
        assert!(err.contains("damaged data"), "{err}");
    }
}
