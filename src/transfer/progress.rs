//! Progress bars for a transfer on a terminal: the whole session and the file in flight, each
//! with rate and ETA (indicatif). Hidden when stderr is not a terminal, where the summary line
//! says it all.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one session; every method is cheap when hidden.
pub struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
    file: Option<ProgressBar>,
}

impl Progress {
    /// `shown`: draw on stderr (it must be a terminal too); otherwise nothing is drawn.
    pub fn new(shown: bool, total_bytes: u64) -> Self {
        let target = if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(style("total"));
        Progress {
            multi,
            total,
            file: None,
        }
    }

    /// A file starts, `done` of its `size` bytes already there.
    pub fn start_file(&mut self, name: &str, size: u64, done: u64) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(style("file"));
        bar.set_message(name.to_string());
        bar.set_position(done);
        self.total.inc(done);
        if let Some(old) = self.file.replace(bar) {
            old.finish_and_clear();
        }
    }

    /// `n` more bytes of the file in flight.
    pub fn advance(&self, n: u64) {
        if let Some(f) = &self.file {
            f.inc(n);
        }
        self.total.inc(n);
    }

    /// A file that is skipped counts as done.
    pub fn skip(&self, size: u64) {
        self.total.inc(size);
    }

    pub fn finish(&mut self) {
        if let Some(f) = self.file.take() {
            f.finish_and_clear();
        }
        self.total.finish_and_clear();
    }
}

fn style(what: &str) -> ProgressStyle {
    let template = if what == "total" {
        "{prefix}[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "  {msg:30!} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
