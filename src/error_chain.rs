//! An error's chain of causes: written out whole for the log, or searched
//! for a known cause buried in a client library's error.

use std::error::Error;
use std::fmt;

/// The error and each of its causes, outermost first. An `io::Error` that
/// wraps another error stands for it: its `source` skips the wrapped error
/// (a TLS library's, say) and goes on to that one's cause.
pub(crate) fn causes<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(unwrap_io(err)), |&e| e.source().map(unwrap_io))
}

fn unwrap_io<'a>(mut err: &'a (dyn Error + 'static)) -> &'a (dyn Error + 'static) {
    while let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        err = inner;
    }
    err
}

/// The first cause of type `T`, however deep.
pub(crate) fn find<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    causes(err).find_map(|e| e.downcast_ref::<T>())
}

/// Writes an error and all its causes, separated by `: `.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in causes(self.0).enumerate() {
            if i > 0 {
                f.write_str(": ")?;
            }
            fmt::Display::fmt(e, f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn the_chain_is_written_whole_and_searched_to_its_end() {
        let e = Outer(Inner);
        assert_eq!(Chain(&e).to_string(), "outer: inner");
        assert!(find::<Inner>(&e).is_some());
        assert!(find::<std::io::Error>(&e).is_none());
    }

    #[test]
    fn an_io_error_stands_for_the_error_it_wraps() {
        let e = Outer2(std::io::Error::other(std::io::Error::other(Outer(Inner))));
        assert_eq!(Chain(&e).to_string(), "outer2: outer: inner");
        assert!(find::<Outer>(&e).is_some());
        assert!(find::<Inner>(&e).is_some());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer2")]
    struct Outer2(#[source] std::io::Error);
}
