//! Progress of a slow opening: a store of many gigabytes takes seconds to walk (its LMDB page
//! structure is verified first) and, once, to upgrade to a newer on-disk format.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use umadb_core::{OpeningProgress, ProgressReporter, FORMAT_VERSION};

/// Time between two lines about the same slow step.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Stores of at least this many pages (1 GiB of 4 KiB pages) are said to be walked when the
/// walk starts: it takes about a second per GiB not in the page cache.
const LARGE_WALK: u64 = 1 << 18;

/// A reporter that hands `emit` a line when a format upgrade or the walk of a large store
/// starts, and one every [`PROGRESS_EVERY`] while a step of the opening goes on; a quick
/// opening of a store under 1 GiB says nothing through it.
pub fn opening_reporter(emit: impl Fn(String) + Send + Sync + 'static) -> ProgressReporter {
    let last_line = Mutex::new(Instant::now());
    ProgressReporter::new(move |progress| {
        let mut last_line = last_line
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let long_step_starts = match progress {
            OpeningProgress::UpgradingIndex { done, .. } => done == 0,
            OpeningProgress::WalkingPages { done, total } => done == 0 && total >= LARGE_WALK,
        };
        if long_step_starts || last_line.elapsed() >= PROGRESS_EVERY {
            *last_line = Instant::now();
            emit(describe(progress));
        }
    })
}

/// One line saying how far `progress` has got.
pub fn describe(progress: OpeningProgress) -> String {
    match progress {
        OpeningProgress::WalkingPages { done, total } => format!(
            "verifying LMDB's page structure before opening: {done} of {total} pages ({})",
            percent(done, total)
        ),
        OpeningProgress::UpgradingIndex {
            from,
            done: 0,
            total,
        } => format!(
            "upgrading the store from on-disk format version {from} to {FORMAT_VERSION}: \
             {total} index entries to pass over; builds before this one cannot open it \
             afterwards"
        ),
        OpeningProgress::UpgradingIndex { from, done, total } => format!(
            "upgrading the store from on-disk format version {from} to {FORMAT_VERSION}: \
             {done} of {total} index entries ({})",
            percent(done, total)
        ),
    }
}

fn percent(done: u64, total: u64) -> String {
    match total {
        0 => "100%".into(),
        _ => format!("{}%", (done as u128 * 100 / total as u128).min(100)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lines_name_the_step_and_its_share_done() {
        let walking = describe(OpeningProgress::WalkingPages {
            done: 65_536,
            total: 262_144,
        });
        assert_eq!(
            walking,
            "verifying LMDB's page structure before opening: 65536 of 262144 pages (25%)"
        );
        let upgrading = describe(OpeningProgress::UpgradingIndex {
            from: 2,
            done: 3,
            total: 4,
        });
        assert!(
            upgrading.contains("from on-disk format version 2 to"),
            "{upgrading}"
        );
        assert!(
            upgrading.ends_with("3 of 4 index entries (75%)"),
            "{upgrading}"
        );
        let empty = describe(OpeningProgress::WalkingPages { done: 0, total: 0 });
        assert!(empty.ends_with("(100%)"), "{empty}");
    }

    #[test]
    fn a_quick_opening_says_nothing_but_an_upgrade_or_a_large_walk_is_announced() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reporter = opening_reporter(move |line| sink.lock().unwrap().push(line));
        for done in [0, 65_536, 131_072, 131_100] {
            reporter.report(OpeningProgress::WalkingPages {
                done,
                total: 131_100,
            });
        }
        assert!(lines.lock().unwrap().is_empty());
        reporter.report(OpeningProgress::UpgradingIndex {
            from: 2,
            done: 0,
            total: 10,
        });
        reporter.report(OpeningProgress::UpgradingIndex {
            from: 2,
            done: 10,
            total: 10,
        });
        reporter.report(OpeningProgress::WalkingPages {
            done: 0,
            total: LARGE_WALK,
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("10 index entries to pass over"),
            "{lines:?}"
        );
        assert!(lines[1].ends_with(" 0 of 262144 pages (0%)"), "{lines:?}");
    }
}
