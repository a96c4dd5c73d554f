//! A walk over LMDB's own page structure in the data file, with ordinary bounds-checked reads,
//! before LMDB is allowed to follow any of it.
//!
//! LMDB 0.9 keeps no checksums of its pages and trusts every pointer in them: a damaged page
//! header, node offset or child page number makes the process that follows it read outside the
//! page or the file and fault. Records carry checksums of their own (`format.rs`), but the
//! structure that leads to them does not. So a store is walked here first, from the newest meta
//! page through every tree (the free list, the main database, each named database and every
//! overflow run), and refused as damaged if anything LMDB would rely on does not hold:
//!
//! - both meta pages carry LMDB's magic and data version, and agree on a sane page size;
//! - every page reached lies inside the file and below the meta page's last page, carries its
//!   own page number and the type its place in the tree requires, and is reached only once
//!   (free-listed pages included), so no cycle and no page shared between two owners;
//! - a page's free-space bounds and every node in it (header, key, inline data) lie inside the
//!   page; keys are at most LMDB's maximum key size;
//! - overflow runs and free-list entries are well formed, and each tree's page and entry counts
//!   match its record.
//!
//! The layout facts used (64-bit little-endian LMDB 0.9, data version 1) are those of LMDB's
//! documented file format; the walk only reads the file.

use super::{OpeningProgress, ProgressReporter};
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PAGE_HEADER: usize = 16;
const NODE_HEADER: usize = 8;
/// Size of a database record (`MDB_db`): in a meta page, and as a named database's data.
const DB_RECORD: usize = 48;
const META_MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;
const NUM_METAS: u64 = 2;
const NO_PAGE: u64 = u64::MAX;
const MAX_KEY: usize = 511;
/// LMDB's cursors hold at most this many levels.
const MAX_DEPTH: u16 = 32;
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 32_768;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;
const P_SUBP: u16 = 0x40;
/// Page flags that say what a page is (the rest are in-memory bookkeeping).
const PAGE_TYPE: u16 = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP;

const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;

/// Problems named in an error at most.
const MAX_LISTED: usize = 10;
/// The layout constants here are those of 64-bit little-endian builds of LMDB.
pub(crate) const LAYOUT_KNOWN: bool =
    cfg!(all(target_pointer_width = "64", target_endian = "little"));
/// Pages reached between two progress reports.
const PAGES_PER_REPORT: u64 = 1 << 16;
/// Walks of a store another process keeps changing, before giving up on a conclusive one.
const ATTEMPTS: u32 = 5;

/// What a clean walk saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSummary {
    /// Pages reached from the newest meta page, free-listed ones included.
    pub pages: u64,
    pub page_size: u32,
    /// LMDB transaction id of the snapshot walked.
    pub txn_id: u64,
    /// False when another process appended during every attempt, reusing pages of the snapshot
    /// being walked: nothing was found that proves damage, but the walk did not settle.
    pub conclusive: bool,
}

/// Walks the page structure of LMDB data file `path`. `Err(Corruption)` names what is damaged.
///
/// Another process may append while this runs, reusing pages of the snapshot walked: a walk that
/// finds a problem while the newest meta page moved is repeated, and if the store moves under
/// every attempt the summary says the walk was not conclusive rather than calling it damaged.
/// `progress` hears of every [`PAGES_PER_REPORT`] pages reached.
pub fn verify(path: &Path, progress: Option<&ProgressReporter>) -> Result<PageSummary> {
    let file =
        File::open(path).map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
    if !LAYOUT_KNOWN {
        return Err(Error::InvalidArgument(
            "walking LMDB's pages needs a 64-bit little-endian build".into(),
        ));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut walk = Walk::new(&file, path)?;
        walk.progress = progress;
        if walk.file_len == 0 {
            // LMDB initializes an empty data file as a new environment (a crash can leave one
            // between creating the file and writing its meta pages): nothing to walk.
            return Ok(PageSummary {
                pages: 0,
                page_size: 0,
                txn_id: 0,
                conclusive: true,
            });
        }
        let Some(meta) = walk.read_metas()? else {
            // A meta page read while another process rewrites it can come out torn: only a
            // meta page found wrong on every attempt is damaged.
            if attempt < ATTEMPTS {
                continue;
            }
            return Err(walk.damaged(path));
        };
        walk.walk_all(&meta)?;
        if walk.problem_count == 0 {
            walk.report(walk.last_page + 1);
        }
        let summary = PageSummary {
            pages: walk.pages,
            page_size: walk.page_size as u32,
            txn_id: meta.txn_id,
            conclusive: true,
        };
        if walk.problem_count == 0 {
            return Ok(summary);
        }
        let moved = match Walk::new(&file, path)?.read_metas()? {
            Some(now) => now.txn_id != meta.txn_id,
            None => false,
        };
        if !moved {
            return Err(walk.damaged(path));
        }
        if attempt == ATTEMPTS {
            return Ok(PageSummary {
                conclusive: false,
                ..summary
            });
        }
    }
}

/// Bytes of a meta page a checkpoint keeps (`wal.rs`): the page header and LMDB's meta.
const META_COPY: usize = PAGE_HEADER + 136;
/// Where a meta page holds its page size, and its transaction id.
const META_PAGE_SIZE: usize = PAGE_HEADER + 24;
const META_TXN_ID: usize = PAGE_HEADER + 32 + 2 * DB_RECORD;

fn layout_known() -> Result<()> {
    if LAYOUT_KNOWN {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "UmaDB's store needs a 64-bit little-endian build".into(),
        ))
    }
}

/// The meta page LMDB wrote for transaction `txn_id` into data file `file`, flushed: read back
/// for a checkpoint.
pub(crate) fn meta_page(file: &File, txn_id: u64) -> Result<Vec<u8>> {
    layout_known()?;
    let read = |offset: u64| {
        let mut page = vec![0u8; META_COPY];
        file.read_exact_at(&mut page, offset)
            .map(|()| page)
            .map_err(|e| Error::Io(format!("cannot read a meta page of the data file: {e}")))
    };
    let page_size = u32_at(&read(0)?, META_PAGE_SIZE) as u64;
    let page = read((txn_id % 2) * page_size)?;
    if u64_at(&page, META_TXN_ID) != txn_id || u32_at(&page, PAGE_HEADER) != META_MAGIC {
        return Err(Error::Internal(format!(
            "the data file's meta page for transaction {txn_id} holds transaction {}",
            u64_at(&page, META_TXN_ID)
        )));
    }
    Ok(page)
}

/// When a meta page of a commit after checkpoint `txn_id` reached data file `path`, writes the
/// checkpoint's meta page `meta` into both meta slots (as `txn_id` in its own slot, as
/// `txn_id - 1` in the other) and flushes them, so LMDB opens at the checkpoint. Refuses a data file
/// whose meta pages are all older than the checkpoint: that is not the file the log was written
/// beside (a backup restored into a directory that kept its old log files, say).
pub(crate) fn restore_metas(path: &Path, meta: &[u8], txn_id: u64) -> Result<()> {
    layout_known()?;
    let io = |e: std::io::Error| Error::Io(format!("cannot restore {}: {e}", path.display()));
    if meta.len() != META_COPY
        || u32_at(meta, PAGE_HEADER) != META_MAGIC
        || u64_at(meta, META_TXN_ID) != txn_id
    {
        return Err(Error::Corruption(format!(
            "{}: the log's checkpoint does not hold a meta page of transaction {txn_id}",
            path.display()
        )));
    }
    let page_size = u32_at(meta, META_PAGE_SIZE) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut newest = 0;
    for slot in 0..2u64 {
        let mut page = vec![0u8; META_COPY];
        if file.read_exact_at(&mut page, slot * page_size).is_ok() {
            newest = newest.max(u64_at(&page, META_TXN_ID));
        }
    }
    if newest == txn_id {
        // No meta page of a later commit reached the disk: LMDB opens at the checkpoint as it is.
        return Ok(());
    }
    if newest < txn_id {
        return Err(Error::Corruption(format!(
            "{}: the data file ends at transaction {newest}, before the checkpoint of its log \
             files (transaction {txn_id}); if a backup was restored here, remove the files \
             log-0 and log-1 beside it",
            path.display()
        )));
    }
    for slot in 0..2u64 {
        let mut page = meta.to_vec();
        page[..8].copy_from_slice(&slot.to_le_bytes());
        if slot != txn_id % 2 {
            page[META_TXN_ID..META_TXN_ID + 8]
                .copy_from_slice(&txn_id.saturating_sub(1).to_le_bytes());
        }
        file.write_all_at(&page, slot * page_size).map_err(io)?;
    }
    file.sync_data().map_err(io)
}

/// A database record (`MDB_db`).
#[derive(Debug, Clone, Copy)]
struct DbRecord {
    flags: u16,
    depth: u16,
    branch_pages: u64,
    leaf_pages: u64,
    overflow_pages: u64,
    entries: u64,
    root: u64,
}

impl DbRecord {
    fn parse(b: &[u8]) -> DbRecord {
        DbRecord {
            flags: u16_at(b, 4),
            depth: u16_at(b, 6),
            branch_pages: u64_at(b, 8),
            leaf_pages: u64_at(b, 16),
            overflow_pages: u64_at(b, 24),
            entries: u64_at(b, 32),
            root: u64_at(b, 40),
        }
    }
}

struct Meta {
    free: DbRecord,
    main: DbRecord,
    last_page: u64,
    txn_id: u64,
}

/// Where a page sits in its tree: its level of `depth`, and the keys it may hold as positions
/// (from, inclusive; to, exclusive), where its parents say so.
#[derive(Clone, Copy)]
struct Place {
    level: u16,
    depth: u16,
    span: (Option<u64>, Option<u64>),
}

/// The events a page of `events` serves, in words, for the problems found in it.
fn holding_positions(span: (Option<u64>, Option<u64>)) -> String {
    match span {
        (Some(from), Some(to)) if to > from => {
            format!(" (it holds the events at positions {from}..={})", to - 1)
        }
        (Some(from), None) => format!(" (it holds the events from position {from} on)"),
        (None, Some(to)) if to > 1 => {
            format!(" (it holds the events up to position {})", to - 1)
        }
        _ => String::new(),
    }
}

/// Which tree a page belongs to: what its leaves may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Free,
    Main,
    Named,
}

#[derive(Default)]
struct Counts {
    branch: u64,
    leaf: u64,
    overflow: u64,
    entries: u64,
}

struct Walk<'a> {
    file: &'a File,
    file_len: u64,
    page_size: usize,
    last_page: u64,
    /// One bit per page of the file: reached already.
    seen: Vec<u64>,
    seen_past_end: HashSet<u64>,
    /// Every tree page reached and its flags, for tests that damage pages in use.
    #[cfg(test)]
    reached: Vec<(u64, u16, String)>,
    pages: u64,
    problems: Vec<String>,
    problem_count: usize,
    /// Whether the tree being walked is keyed by position (`events`).
    positions: bool,
    /// The positions the page being walked holds (in `events`), added to its problems in
    /// words: the events it would serve.
    holding: Option<(Option<u64>, Option<u64>)>,
    /// The page being walked: one buffer, read into page after page.
    page: Vec<u8>,
    progress: Option<&'a ProgressReporter>,
    /// `pages` when progress was last reported.
    reported: u64,
}

impl<'a> Walk<'a> {
    fn new(file: &'a File, path: &Path) -> Result<Walk<'a>> {
        let file_len = file
            .metadata()
            .map_err(|e| Error::Io(format!("cannot stat {}: {e}", path.display())))?
            .len();
        Ok(Walk {
            file,
            file_len,
            page_size: 0,
            last_page: 0,
            seen: Vec::new(),
            seen_past_end: HashSet::new(),
            #[cfg(test)]
            reached: Vec::new(),
            pages: 0,
            problems: Vec::new(),
            problem_count: 0,
            positions: false,
            holding: None,
            page: Vec::new(),
            progress: None,
            reported: 0,
        })
    }

    /// Tells `progress` that `done` pages are reached, of the pages the meta page says are
    /// used.
    fn report(&mut self, done: u64) {
        if let Some(progress) = self.progress {
            progress.report(OpeningProgress::WalkingPages {
                done,
                total: self.last_page + 1,
            });
            self.reported = self.pages;
        }
    }

    fn damaged(&self, path: &Path) -> Error {
        let mut message = format!(
            "{} has damaged LMDB page structure: {}",
            path.display(),
            self.problems.join("; ")
        );
        let more = self.problem_count - self.problems.len();
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        Error::Corruption(message)
    }

    fn problem(&mut self, message: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            let holding = self.holding.map(holding_positions).unwrap_or_default();
            self.problems.push(message + &holding);
        }
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::Io(format!("cannot read the data file at {offset}: {e}")))?;
        Ok(buf)
    }

    /// Reads both meta pages as LMDB does at open, and returns the newer one if both are sound.
    fn read_metas(&mut self) -> Result<Option<Meta>> {
        let meta_end = (PAGE_HEADER + 136) as u64;
        if self.file_len < meta_end {
            self.problem(format!(
                "the data file is {} bytes, too short for a meta page",
                self.file_len
            ));
            return Ok(None);
        }
        let first = self.read_at(0, meta_end as usize)?;
        let page_size = u32_at(&first, PAGE_HEADER + 24);
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            self.problem(format!("meta page 0 gives page size {page_size}"));
            return Ok(None);
        }
        self.page_size = page_size as usize;
        if self.file_len < page_size as u64 + meta_end {
            self.problem("the data file ends before meta page 1".to_string());
            return Ok(None);
        }
        let second = self.read_at(page_size as u64, meta_end as usize)?;
        let mut metas = Vec::new();
        for (number, page) in [(0u64, &first), (1, &second)] {
            let magic = u32_at(page, PAGE_HEADER);
            let version = u32_at(page, PAGE_HEADER + 4);
            if u16_at(page, 10) & PAGE_TYPE != P_META || u64_at(page, 0) != number {
                self.problem(format!("meta page {number} is not marked as a meta page"));
            } else if magic != META_MAGIC || version != DATA_VERSION {
                self.problem(format!(
                    "meta page {number} has magic {magic:#x} and version {version}"
                ));
            } else if u32_at(page, PAGE_HEADER + 24) != page_size {
                self.problem(format!(
                    "meta pages disagree on the page size ({page_size} and {})",
                    u32_at(page, PAGE_HEADER + 24)
                ));
            } else {
                metas.push(Meta {
                    free: DbRecord::parse(&page[PAGE_HEADER + 24..]),
                    main: DbRecord::parse(&page[PAGE_HEADER + 24 + DB_RECORD..]),
                    last_page: u64_at(page, PAGE_HEADER + 24 + 2 * DB_RECORD),
                    txn_id: u64_at(page, PAGE_HEADER + 32 + 2 * DB_RECORD),
                });
            }
        }
        if metas.len() < 2 {
            return Ok(None);
        }
        // LMDB reads the snapshot of the meta page with the higher transaction id.
        let newer = if metas[0].txn_id < metas[1].txn_id {
            metas.pop()
        } else {
            metas.into_iter().next()
        };
        Ok(newer)
    }

    fn walk_all(&mut self, meta: &Meta) -> Result<()> {
        self.last_page = meta.last_page;
        let file_pages = self.file_len / self.page_size as u64;
        // The file may end before the last page when the free list holds the final pages, but
        // never before a page in use.
        if meta.last_page < NUM_METAS {
            self.problem(format!(
                "the meta page gives last page {} for a file of {file_pages} pages",
                meta.last_page
            ));
            return Ok(());
        }
        self.seen = vec![0; (file_pages.min(meta.last_page + 1) as usize).div_ceil(64)];
        for page in 0..NUM_METAS {
            self.mark(page);
        }
        self.pages = NUM_METAS;
        self.report(0);
        let mut named = Vec::new();
        self.walk_tree("the free list", meta.free, Tree::Free, &mut named)?;
        if meta.main.flags != 0 {
            self.problem(format!(
                "the main database has flags {:#x}; an UmaDB store uses none",
                meta.main.flags
            ));
            return Ok(());
        }
        self.walk_tree("the main database", meta.main, Tree::Main, &mut named)?;
        for (name, record) in named {
            let label = format!("database {:?}", String::from_utf8_lossy(&name));
            if record.flags != 0 {
                self.problem(format!(
                    "{label} has flags {:#x}; an UmaDB store uses none",
                    record.flags
                ));
                continue;
            }
            self.positions = name == b"events";
            self.walk_tree(&label, record, Tree::Named, &mut Vec::new())?;
            self.positions = false;
            self.holding = None;
        }
        Ok(())
    }

    fn walk_tree(
        &mut self,
        label: &str,
        record: DbRecord,
        tree: Tree,
        named: &mut Vec<(Vec<u8>, DbRecord)>,
    ) -> Result<()> {
        if record.root == NO_PAGE {
            let empty = record.depth == 0
                && record.entries == 0
                && record.branch_pages == 0
                && record.leaf_pages == 0
                && record.overflow_pages == 0;
            if !empty {
                self.problem(format!("{label} has no root page but is not empty"));
            }
            return Ok(());
        }
        if record.depth == 0 || record.depth > MAX_DEPTH {
            self.problem(format!("{label} has depth {}", record.depth));
            return Ok(());
        }
        let mut counts = Counts::default();
        let before = self.problem_count;
        let place = Place {
            level: 1,
            depth: record.depth,
            span: (None, None),
        };
        self.walk_page(label, record.root, place, tree, named, &mut counts)?;
        self.holding = None;
        if self.problem_count > before {
            return Ok(());
        }
        let found = (counts.branch, counts.leaf, counts.overflow, counts.entries);
        let recorded = (
            record.branch_pages,
            record.leaf_pages,
            record.overflow_pages,
            record.entries,
        );
        if found != recorded {
            self.problem(format!(
                "{label} records (branch pages, leaf pages, overflow pages, entries) = \
                 {recorded:?} but holds {found:?}"
            ));
        }
        Ok(())
    }

    /// Marks `count` pages from `first` as reached; false (and a problem) if any is out of
    /// range, past the end of the file when `in_file`, or reached before.
    fn claim(&mut self, label: &str, first: u64, count: u64, in_file: bool) -> bool {
        let end = first.checked_add(count);
        let in_range = first >= NUM_METAS
            && end.is_some_and(|end| end - 1 <= self.last_page)
            && (!in_file
                || end.is_some_and(|end| {
                    end.checked_mul(self.page_size as u64)
                        .is_some_and(|bytes| bytes <= self.file_len)
                }));
        if !in_range {
            self.problem(format!(
                "{label} refers to page {first} (+{count}), outside the store's {} pages{}",
                self.last_page + 1,
                if in_file {
                    " or past the end of the file"
                } else {
                    ""
                }
            ));
            return false;
        }
        for page in first..first + count {
            if !self.mark(page) {
                self.problem(format!(
                    "{label} reaches page {page}, which is reached twice"
                ));
                return false;
            }
        }
        self.pages += count;
        if self.pages - self.reported >= PAGES_PER_REPORT {
            self.report(self.pages);
        }
        true
    }

    /// Marks one page as reached; false if it was already.
    fn mark(&mut self, page: u64) -> bool {
        match self.seen.get_mut((page / 64) as usize) {
            Some(word) => {
                let bit = 1 << (page % 64);
                let fresh = *word & bit == 0;
                *word |= bit;
                fresh
            }
            // Past the end of the file: only free-listed pages, which LMDB has not written yet.
            None => self.seen_past_end.insert(page),
        }
    }

    fn walk_page(
        &mut self,
        label: &str,
        number: u64,
        place: Place,
        tree: Tree,
        named: &mut Vec<(Vec<u8>, DbRecord)>,
        counts: &mut Counts,
    ) -> Result<()> {
        self.holding = self.positions.then_some(place.span);
        if !self.claim(label, number, 1, true) {
            return Ok(());
        }
        // One buffer for every page: it is given back before the page's children are walked.
        let mut page = std::mem::take(&mut self.page);
        page.resize(self.page_size, 0);
        let offset = number * self.page_size as u64;
        let children = match self.file.read_exact_at(&mut page, offset) {
            Ok(()) => self.check_page(label, number, place, tree, &page, named, counts),
            Err(e) => Err(Error::Io(format!(
                "cannot read the data file at {offset}: {e}"
            ))),
        };
        self.page = page;
        let children = children?;
        let Place { level, depth, span } = place;
        for (i, &(child, low)) in children.iter().enumerate() {
            let high = children.get(i + 1).map_or(span.1, |&(_, next)| next);
            let place = Place {
                level: level + 1,
                depth,
                span: (low, high),
            };
            self.walk_page(label, child, place, tree, named, counts)?;
        }
        Ok(())
    }

    /// Checks a page read into `page` (and claims the overflow runs and free pages it names);
    /// the children of a sound branch page, each with the low end of its span. Nothing to
    /// walk on when the page has a problem.
    #[allow(clippy::too_many_arguments)]
    fn check_page(
        &mut self,
        label: &str,
        number: u64,
        place: Place,
        tree: Tree,
        page: &[u8],
        named: &mut Vec<(Vec<u8>, DbRecord)>,
        counts: &mut Counts,
    ) -> Result<Vec<(u64, Option<u64>)>> {
        let Place { level, depth, span } = place;
        let is_leaf = level == depth;
        let expected = if is_leaf { P_LEAF } else { P_BRANCH };
        let flags = u16_at(page, 10);
        #[cfg(test)]
        self.reached.push((number, flags, label.to_string()));
        if u64_at(page, 0) != number || flags & PAGE_TYPE != expected {
            self.problem(format!(
                "{label}: page {number} (level {level} of {depth}) carries page number {} and \
                 flags {flags:#x}",
                u64_at(page, 0)
            ));
            return Ok(Vec::new());
        }
        let (lower, upper) = (u16_at(page, 12) as usize, u16_at(page, 14) as usize);
        if lower < PAGE_HEADER || !(lower - PAGE_HEADER).is_multiple_of(2) || lower > upper {
            self.problem(format!(
                "{label}: page {number} has free space {lower}..{upper}"
            ));
            return Ok(Vec::new());
        }
        if upper > self.page_size {
            self.problem(format!(
                "{label}: page {number} has free space ending at {upper}, past the page"
            ));
            return Ok(Vec::new());
        }
        let keys = (lower - PAGE_HEADER) / 2;
        if is_leaf {
            counts.leaf += 1;
            counts.entries += keys as u64;
        } else {
            counts.branch += 1;
            if keys == 0 {
                self.problem(format!("{label}: branch page {number} has no children"));
                return Ok(Vec::new());
            }
        }
        let mut children = Vec::new();
        for i in 0..keys {
            let at = u16_at(page, PAGE_HEADER + 2 * i) as usize;
            let node = |what: &str| format!("{label}: page {number} node {i} {what}");
            if at < upper || at + NODE_HEADER > self.page_size {
                self.problem(node(&format!(
                    "is at offset {at}, outside the page's nodes"
                )));
                return Ok(Vec::new());
            }
            let (lo, hi) = (u16_at(page, at) as u64, u16_at(page, at + 2) as u64);
            let node_flags = u16_at(page, at + 4);
            let key_len = u16_at(page, at + 6) as usize;
            let key_end = at + NODE_HEADER + key_len;
            if key_len > MAX_KEY || key_end > self.page_size {
                self.problem(node(&format!("has a key of {key_len} bytes")));
                return Ok(Vec::new());
            }
            if !is_leaf {
                // A branch's first key is implicit: the lower bound of the page's own span.
                let key = &page[at + NODE_HEADER..key_end];
                let low = match i {
                    0 => span.0,
                    _ => <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes),
                };
                children.push((lo | hi << 16 | (node_flags as u64) << 32, low));
                continue;
            }
            let data_len = (lo | hi << 16) as usize;
            let key = &page[at + NODE_HEADER..key_end];
            if node_flags & !(F_BIGDATA | F_SUBDATA) != 0
                || (node_flags & F_SUBDATA != 0 && (tree != Tree::Main || node_flags != F_SUBDATA))
            {
                self.problem(node(&format!("has flags {node_flags:#x}")));
                return Ok(Vec::new());
            }
            let overflowed;
            let data: &[u8] = if node_flags & F_BIGDATA != 0 {
                if key_end + 8 > self.page_size {
                    self.problem(node("has an overflow page number past the page"));
                    return Ok(Vec::new());
                }
                let first = u64_at(page, key_end);
                overflowed =
                    match self.overflow(label, first, data_len, tree == Tree::Free, counts)? {
                        Some(data) => data,
                        None => return Ok(Vec::new()),
                    };
                &overflowed
            } else {
                if key_end + data_len > self.page_size {
                    self.problem(node(&format!(
                        "has {data_len} bytes of data, past the page"
                    )));
                    return Ok(Vec::new());
                }
                &page[key_end..key_end + data_len]
            };
            match tree {
                Tree::Free => {
                    if key_len != 8 || !self.free_list_entry(label, data) {
                        if key_len != 8 {
                            self.problem(node(&format!("has a key of {key_len} bytes")));
                        }
                        return Ok(Vec::new());
                    }
                }
                Tree::Main if node_flags == F_SUBDATA => {
                    if data.len() != DB_RECORD {
                        self.problem(node(&format!(
                            "is a database record of {} bytes",
                            data.len()
                        )));
                        return Ok(Vec::new());
                    }
                    named.push((key.to_vec(), DbRecord::parse(data)));
                }
                Tree::Main | Tree::Named => {}
            }
        }
        Ok(children)
    }

    /// Checks and claims an overflow run holding `len` bytes from page `first`; its bytes when
    /// `keep`. A run may be longer than its data needs: LMDB shrinks data in place.
    fn overflow(
        &mut self,
        label: &str,
        first: u64,
        len: usize,
        keep: bool,
        counts: &mut Counts,
    ) -> Result<Option<Vec<u8>>> {
        if !self.claim(label, first, 1, true) {
            return Ok(None);
        }
        let needed = ((PAGE_HEADER - 1 + len) / self.page_size + 1) as u64;
        let header = self.read_at(first * self.page_size as u64, PAGE_HEADER)?;
        let (flags, pages) = (u16_at(&header, 10), u32_at(&header, 12) as u64);
        #[cfg(test)]
        self.reached.push((first, flags, label.to_string()));
        if u64_at(&header, 0) != first || flags & PAGE_TYPE != P_OVERFLOW || pages < needed {
            self.problem(format!(
                "{label}: overflow page {first} carries page number {}, flags {flags:#x} and \
                 {pages} pages, for {len} bytes",
                u64_at(&header, 0)
            ));
            return Ok(None);
        }
        if pages > 1 && !self.claim(label, first + 1, pages - 1, true) {
            return Ok(None);
        }
        counts.overflow += pages;
        if !keep {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(self.read_at(
            first * self.page_size as u64 + PAGE_HEADER as u64,
            len,
        )?))
    }

    /// A free-list entry: a count, then that many page numbers, each free for reuse. LMDB
    /// reserves room for entries before filling them, so the room may exceed the count.
    fn free_list_entry(&mut self, label: &str, data: &[u8]) -> bool {
        let count = if data.len() >= 8 { u64_at(data, 0) } else { 0 };
        if data.len() < 8 || !data.len().is_multiple_of(8) || data.len() as u64 / 8 - 1 < count {
            self.problem(format!(
                "{label}: an entry of {} bytes lists {count} pages",
                data.len()
            ));
            return false;
        }
        for i in 0..count as usize {
            if !self.claim(label, u64_at(data, 8 + 8 * i), 1, false) {
                return false;
            }
        }
        true
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AppendRequest, Event, Query, QueryItem, ReadRequest};
    use crate::Store;
    use std::path::PathBuf;

    const PAGE: usize = 4096;

    /// A closed store of 3,000 events over two types and 50 tags, a few of them big enough for
    /// overflow pages: depth 2 trees, every kind of page.
    fn sample_store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = Store::open(&path).expect("open");
        for batch in 0..30u32 {
            let events = (0..100u32)
                .map(|i| {
                    let n = batch * 100 + i;
                    let size = if n % 500 == 7 { 9_000 } else { 40 };
                    Event::new(
                        if n % 2 == 0 { "A" } else { "B" },
                        [format!("tag-{}", n % 50)],
                        vec![n as u8; size],
                    )
                })
                .collect();
            store
                .append(AppendRequest {
                    events,
                    ..Default::default()
                })
                .expect("append");
        }
        drop(store);
        (dir, path)
    }

    fn data_file(path: &Path) -> Vec<u8> {
        std::fs::read(path.join("data.mdb")).expect("read data file")
    }

    /// Writes `bytes` as the store's data file, then walks it: the error's message.
    fn walk_damaged(path: &Path, bytes: &[u8]) -> String {
        std::fs::write(path.join("data.mdb"), bytes).expect("write data file");
        match Store::verify_pages(path) {
            Err(Error::Corruption(message)) => {
                // Opening refuses it the same way, before LMDB reads anything.
                match Store::open(path) {
                    Err(Error::Corruption(open)) => assert_eq!(open, message),
                    Err(other) => panic!("open failed otherwise: {other}"),
                    Ok(_) => panic!("a store with damaged pages was opened"),
                }
                message
            }
            other => panic!("the damage was not found: {other:?}"),
        }
    }

    /// Pages in use (reached from the newest meta page) with one of `flags`; free pages may
    /// hold stale copies that nothing reads.
    fn pages_with(path: &Path, flags: u16) -> Vec<usize> {
        pages_of(path, flags, "")
    }

    /// Like `pages_with`, in the tree whose label contains `tree`.
    fn pages_of(path: &Path, flags: u16, tree: &str) -> Vec<usize> {
        let data = path.join("data.mdb");
        let file = File::open(&data).expect("open data file");
        let mut walk = Walk::new(&file, &data).expect("walk");
        let meta = walk.read_metas().expect("read").expect("meta pages");
        walk.walk_all(&meta).expect("walk");
        let mut pages: Vec<usize> = walk
            .reached
            .iter()
            .filter(|(_, f, label)| f & flags != 0 && label.contains(tree))
            .map(|&(n, _, _)| n as usize)
            .collect();
        pages.sort();
        pages
    }

    /// Offset in the file of node `i` of page `n`.
    fn node_at(bytes: &[u8], n: usize, i: usize) -> usize {
        n * PAGE + u16_at(&bytes[n * PAGE..], PAGE_HEADER + 2 * i) as usize
    }

    fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn a_healthy_store_walks_clean_and_accounts_for_every_page() {
        let (_dir, path) = sample_store();
        let summary = Store::verify_pages(&path).expect("a healthy store");
        let file_pages = (data_file(&path).len() / PAGE) as u64;
        assert_eq!(summary.page_size, PAGE as u32);
        assert_eq!(summary.pages, file_pages, "every page is in use or free");
        assert!(!pages_with(&path, P_BRANCH).is_empty());
        assert!(!pages_with(&path, P_OVERFLOW).is_empty());
        // Reopened, it reports the same walk and reads back whole.
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.page_summary(), Some(summary));
        let (events, head) = store.read_all(ReadRequest::default()).expect("read");
        assert_eq!((events.len(), head), (3000, Some(3000)));
    }

    #[test]
    fn an_empty_data_file_is_a_new_store_as_lmdb_treats_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("data.mdb"), b"").unwrap();
        assert_eq!(Store::verify_pages(&path).expect("walk").pages, 0);
        let store = Store::open(&path).expect("opened as a new store");
        store
            .append(AppendRequest {
                events: vec![Event::new("E", ["t"], b"x".to_vec())],
                ..Default::default()
            })
            .expect("append");
        drop(store);
        assert!(Store::verify_pages(&path).expect("walk").pages > 2);
        // A file too short for a meta page is not empty: LMDB refuses it, and so does the walk.
        std::fs::write(path.join("data.mdb"), [0u8; 100]).unwrap();
        assert!(matches!(Store::open(&path), Err(Error::Corruption(_))));
    }

    #[test]
    fn a_branch_pointing_outside_the_store_or_back_into_the_tree_is_refused() {
        let (_dir, path) = sample_store();
        let pristine = data_file(&path);
        let branch = pages_with(&path, P_BRANCH)[0];
        let child_lo = node_at(&pristine, branch, 1);

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, child_lo + 2, 0x7fff);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("outside the store"), "{message}");

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, child_lo, branch as u16);
        put_u16(&mut bytes, child_lo + 2, 0);
        put_u16(&mut bytes, child_lo + 4, 0);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("reached twice"), "{message}");
    }

    #[test]
    fn damage_in_the_log_names_the_positions_it_would_have_served() {
        let (_dir, path) = sample_store();
        let pristine = data_file(&path);
        let records_on = |leaf: usize| -> Vec<u64> {
            let page = &pristine[leaf * PAGE..(leaf + 1) * PAGE];
            let keys = (u16_at(page, 12) as usize - PAGE_HEADER) / 2;
            (0..keys)
                .map(|i| {
                    let at = u16_at(page, PAGE_HEADER + 2 * i) as usize;
                    u64_at_be(&page[at + NODE_HEADER..at + NODE_HEADER + 8])
                })
                .collect()
        };
        // A leaf of the log with leaves before and after it.
        let (leaf, on_page) = pages_of(&path, P_LEAF, "\"events\"")
            .into_iter()
            .map(|leaf| (leaf, records_on(leaf)))
            .find(|(_, on)| on.first() > Some(&1) && on.last() < Some(&3000))
            .expect("a leaf in the middle of the log");
        let mut bytes = pristine.clone();
        bytes[leaf * PAGE + 10] = 0x7f;
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains(&format!("page {leaf} ")), "{message}");
        let range = message
            .split("it holds the events at positions ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no positions named: {message}"));
        // The positions named are exactly the records on that page.
        assert_eq!(
            range,
            format!("{}..={}", on_page[0], on_page[on_page.len() - 1]),
            "{message}"
        );
    }

    fn u64_at_be(b: &[u8]) -> u64 {
        u64::from_be_bytes(b.try_into().expect("8 bytes"))
    }

    #[test]
    fn a_node_or_free_space_reaching_past_its_page_is_refused() {
        let (_dir, path) = sample_store();
        let pristine = data_file(&path);
        let leaf = pages_with(&path, P_LEAF)[3];

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, node_at(&pristine, leaf, 0) + 6, 600);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("key of 600 bytes"), "{message}");

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, node_at(&pristine, leaf, 0), 0xfff0);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("past the page"), "{message}");

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, leaf * PAGE + PAGE_HEADER, 2);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("outside the page's nodes"), "{message}");

        let mut bytes = pristine.clone();
        put_u16(&mut bytes, leaf * PAGE + 12, 0x2001);
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("free space"), "{message}");
    }

    #[test]
    fn damaged_meta_pages_overflow_runs_and_a_short_file_are_refused() {
        let (_dir, path) = sample_store();
        let pristine = data_file(&path);
        let overflow = pages_with(&path, P_OVERFLOW)[0];

        let mut bytes = pristine.clone();
        bytes[PAGE + PAGE_HEADER] ^= 0xff;
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("meta page 1 has magic"), "{message}");

        let mut bytes = pristine.clone();
        bytes[overflow * PAGE + 12] = 0;
        let message = walk_damaged(&path, &bytes);
        assert!(message.contains("overflow page"), "{message}");

        let message = walk_damaged(&path, &pristine[..pristine.len() - PAGE]);
        assert!(
            message.contains("past the end of the file") || message.contains("reached twice"),
            "{message}"
        );

        // Put back whole, it is served again.
        std::fs::write(path.join("data.mdb"), &pristine).unwrap();
        assert!(Store::open(&path).is_ok());
    }

    #[test]
    fn random_damage_is_refused_or_leaves_a_store_lmdb_can_read_without_faulting() {
        let (_dir, path) = sample_store();
        let pristine = data_file(&path);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut refused, mut opened) = (0, 0);
        for _ in 0..400 {
            let mut bytes = pristine.clone();
            // Short runs of garbage, flipped bits, or whole pages of garbage.
            let kind = next() % 3;
            for _ in 0..1 + next() % 4 {
                let mut at = (next() % bytes.len() as u64) as usize;
                match kind {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    _ => {
                        let len = if kind == 1 {
                            (1 + next() % 16) as usize
                        } else {
                            at -= at % PAGE;
                            PAGE
                        };
                        for b in bytes.iter_mut().skip(at).take(len) {
                            *b = next() as u8;
                        }
                    }
                }
            }
            std::fs::write(path.join("data.mdb"), &bytes).unwrap();
            match Store::verify_pages(&path) {
                Err(Error::Corruption(_)) => refused += 1,
                Err(other) => panic!("a walk must name damage, not fail: {other}"),
                // What the walk passes, LMDB follows without faulting: reads and the check
                // either succeed or report the damage as an error.
                Ok(_) => {
                    opened += 1;
                    if let Ok(store) = Store::open(&path) {
                        let _ = store.read_all(ReadRequest::default());
                        let tag =
                            Query::from_items([QueryItem::new(Vec::<String>::new(), ["tag-7"])]);
                        let _ = store.read_all(ReadRequest {
                            query: tag,
                            ..Default::default()
                        });
                        let _ = store.check(|_| {});
                    }
                }
            }
        }
        assert!(
            refused > 0 && opened > 0,
            "{refused} refused, {opened} opened"
        );
    }
}
