//! Progress over a replay's steps: a bar on a terminal, plain lines otherwise.
//!
//! A batch job (Slurm, nohup, CI) writes stderr to a file: a bar there is invisible or a wall of
//! control codes, and a long replay without a line looks hung. So when stderr is not a
//! terminal, or the report goes out as JSON, progress is a line now and then: at each tenth of
//! the steps, and at least once a minute, never more often than every two seconds.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Lines at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(2);
/// A line at least this often while steps advance.
const MAX_GAP: Duration = Duration::from_secs(60);

/// Reports `done` of `total` steps.
pub(super) enum Progress {
    /// A bar on a terminal.
    Bar(ProgressBar),
    /// Lines on stderr.
    Lines(Lines),
}

/// Plain progress lines, rate-limited.
pub(super) struct Lines {
    what: String,
    total: usize,
    started: Instant,
    last: Instant,
    /// The last tenth a line was printed for.
    tenth: usize,
}

impl Progress {
    /// Progress over `total` steps of `what` (e.g. "replay"): a bar when stderr is a terminal
    /// and the report is not JSON, lines otherwise.
    pub fn new(what: &str, total: usize, json: bool) -> Self {
        if json || !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Progress::Lines(Lines {
                what: what.into(),
                total,
                started: now,
                last: now,
                tenth: 0,
            });
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed} (eta {eta})")
                .expect("static template"),
        );
        Progress::Bar(bar)
    }

    /// `done` steps are finished.
    pub fn set(&mut self, done: usize) {
        match self {
            Progress::Bar(bar) => bar.set_position(done as u64),
            Progress::Lines(lines) => lines.set(done),
        }
    }

    /// Clears the bar; lines say how long it took.
    pub fn finish(self) {
        match self {
            Progress::Bar(bar) => bar.finish_and_clear(),
            Progress::Lines(lines) => eprintln!(
                "{}: {} steps done in {:.1} s",
                lines.what,
                lines.total,
                lines.started.elapsed().as_secs_f64()
            ),
        }
    }
}

impl Lines {
    fn set(&mut self, done: usize) {
        let now = Instant::now();
        let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
        let due = tenth > self.tenth || now.duration_since(self.last) >= MAX_GAP;
        if !due || now.duration_since(self.last) < MIN_GAP || done >= self.total {
            return;
        }
        self.tenth = tenth;
        self.last = now;
        eprintln!("{}", self.line(done, now.duration_since(self.started)));
    }

    /// "replay: step 120/240 (50 %), 35 s elapsed, about 35 s left".
    fn line(&self, done: usize, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let left = secs / done.max(1) as f64 * (self.total - done) as f64;
        format!(
            "{}: step {done}/{} ({:.0} %), {secs:.0} s elapsed, about {left:.0} s left",
            self.what,
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_step_and_the_time_left() {
        let lines = Lines {
            what: "replay".into(),
            total: 240,
            started: Instant::now(),
            last: Instant::now(),
            tenth: 0,
        };
        assert_eq!(
            lines.line(120, Duration::from_secs(35)),
            "replay: step 120/240 (50 %), 35 s elapsed, about 35 s left"
        );
    }
}
