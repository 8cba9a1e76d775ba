//! Quiet exits when the reader of standard output goes away (`replay info … | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe returns an error and `println!` panics
//! with "failed printing to stdout: Broken pipe". Command-line tools are expected to stop
//! silently instead, as they do when SIGPIPE keeps its default action.

/// Restores SIGPIPE's default action for this process: a write to a closed pipe then ends the
/// program quietly (exit by signal 13), as `head`, `grep` and other Unix tools expect. Call it
/// first thing in `main` of a binary; it does nothing on other platforms.
///
/// ```
/// epk_replay::broken_pipe::exit_quietly();
/// ```
pub fn exit_quietly() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions; it is done
    // before any thread that could write to the pipe runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
