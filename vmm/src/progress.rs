//! Progress of a long command on stderr, shared by `vmm campaign` and `vmm bench`.
//!
//! On a terminal it is an `indicatif` bar redrawn in place. Anywhere else (a log file, CI, a pipe)
//! a redrawn line would run every step together on one line, so it is plain lines instead, each
//! ending in a newline: one per step, or one per tenth of the steps for a campaign's thousands of
//! seeds.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// The bar on a terminal: `campaign: [=====>    ] 512/1000 seeds, 0 failed, 300 runs/min [00:01:42]`.
const BAR_TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len}{msg} [{elapsed_precise}]";

/// Which steps get a line off a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// Every step.
    EachStep,
    /// The step that completes another tenth of the total (every step when there are fewer than ten).
    EachTenth,
}

/// Progress through a known number of steps.
pub struct Progress {
    prefix: String,
    total: u64,
    done: u64,
    out: Output,
}

enum Output {
    Bar(ProgressBar),
    Plain {
        out: Box<dyn Write + Send>,
        lines: Lines,
        tenths_shown: u64,
    },
}

impl Progress {
    /// Progress on stderr: a bar when stderr is a terminal, else plain lines as `lines` says.
    pub fn stderr(prefix: &str, total: u64, lines: Lines) -> Progress {
        if std::io::stderr().is_terminal() {
            Self::bar(prefix, total, ProgressDrawTarget::stderr())
        } else {
            Self::plain(prefix, total, lines, Box::new(std::io::stderr()))
        }
    }

    /// Progress as plain lines on `out`, `{prefix} {done}/{total}{message}` each.
    pub fn plain(prefix: &str, total: u64, lines: Lines, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            prefix: prefix.to_string(),
            total,
            done: 0,
            out: Output::Plain {
                out,
                lines,
                tenths_shown: 0,
            },
        }
    }

    /// Progress as an indicatif bar drawn on `target`.
    pub fn bar(prefix: &str, total: u64, target: ProgressDrawTarget) -> Progress {
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), target).with_style(style);
        bar.set_prefix(prefix.to_string());
        Progress {
            prefix: prefix.to_string(),
            total,
            done: 0,
            out: Output::Bar(bar),
        }
    }

    /// How many steps are done.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// One more step done; `message` follows `done/total` (start it with a space or a comma).
    pub fn step(&mut self, message: &str) {
        self.done += 1;
        match &mut self.out {
            Output::Bar(bar) => {
                bar.set_message(message.to_string());
                bar.set_position(self.done);
            }
            Output::Plain {
                out,
                lines,
                tenths_shown,
            } => {
                let show = match lines {
                    Lines::EachStep => true,
                    Lines::EachTenth => {
                        let tenths = self.done * 10 / self.total.max(1);
                        let more = tenths > *tenths_shown;
                        *tenths_shown = tenths;
                        more
                    }
                };
                if show {
                    // Progress is best effort: a closed stderr must not stop the command.
                    let _ = writeln!(out, "{} {}/{}{message}", self.prefix, self.done, self.total);
                }
            }
        }
    }

    /// Ends the progress: a bar that moved stays, as last drawn, on its own line.
    pub fn finish(self) {
        if let Output::Bar(bar) = self.out {
            if self.done > 0 {
                bar.finish();
            } else {
                bar.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn off_a_terminal_each_step_is_its_own_line() {
        let out = Shared::default();
        let mut progress =
            Progress::plain("bench boot:", 3, Lines::EachStep, Box::new(out.clone()));
        for _ in 0..3 {
            progress.step(" runs");
        }
        progress.finish();
        assert_eq!(
            out.text(),
            "bench boot: 1/3 runs\nbench boot: 2/3 runs\nbench boot: 3/3 runs\n"
        );
    }

    #[test]
    fn off_a_terminal_a_line_marks_each_tenth_and_the_end() {
        let out = Shared::default();
        let mut progress =
            Progress::plain("campaign:", 25, Lines::EachTenth, Box::new(out.clone()));
        for i in 0..25 {
            progress.step(&format!(" seeds, {} failed", i / 10));
        }
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10, "{text}");
        assert_eq!(lines[0], "campaign: 3/25 seeds, 0 failed");
        assert_eq!(lines[9], "campaign: 25/25 seeds, 2 failed");
    }

    #[test]
    fn off_a_terminal_fewer_than_ten_steps_each_get_a_line() {
        let out = Shared::default();
        let mut progress = Progress::plain("campaign:", 4, Lines::EachTenth, Box::new(out.clone()));
        for _ in 0..4 {
            progress.step("");
        }
        assert_eq!(out.text().lines().count(), 4);
        assert_eq!(progress.done(), 4);
    }

    #[test]
    fn a_bar_counts_its_steps_without_printing_lines() {
        let mut progress = Progress::bar("campaign:", 5, ProgressDrawTarget::hidden());
        progress.step(" seeds");
        progress.step(" seeds");
        assert_eq!(progress.done(), 2);
        let Output::Bar(bar) = &progress.out else {
            panic!("not a bar")
        };
        assert_eq!((bar.position(), bar.length()), (2, Some(5)));
        assert_eq!(bar.message(), " seeds");
        progress.finish();
    }
}
