//! What a power cut could leave of a store's files, from a trace of the server's writes and
//! flushes (recorded by `record.c`, loaded into the server with `LD_PRELOAD`).
//!
//! The files are modelled in blocks of [`BLOCK`] bytes, a disk sector, the unit a disk writes
//! whole (a 4 KiB page may tear between its sectors when the power goes). A block's
//! durable content is what it held when a flush of its file that started after the write
//! returned (or the write went through a descriptor opened with `O_DSYNC`). Writes after that
//! are in the page cache only: when the power goes, the disk may hold any of the block's
//! versions since its durable one, independently of every other block (the kernel writes dirty
//! pages back in no particular order). A file created during the trace is named durably only
//! once a flush of the directory that started after its creation has returned; until then it
//! may be missing altogether; so is a file renamed into the directory (a new store's data file,
//! made in `creating/`), under its new name. [`Files::power_cut`] picks one version per block,
//! and whether each such file is there.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BLOCK: usize = 512;

/// Builds the recording library with the machine's C compiler into `dir`; its path.
pub fn build_recorder(dir: &Path) -> PathBuf {
    crate::support::build_preload_library("power/record.c", dir, "librecord.so")
}

/// Loads the recorder at `recorder` into `command`, recording the files of `dir` into `trace`.
pub fn record<'c>(
    command: &'c mut Command,
    recorder: &Path,
    dir: &Path,
    trace: &Path,
) -> &'c mut Command {
    command
        .env("LD_PRELOAD", recorder)
        .env("UMADB_POWER_DIR", dir)
        .env("UMADB_POWER_TRACE", trace)
}

/// One file: what the disk surely holds, what the page cache holds, and each block's versions
/// written since its durable one.
#[derive(Clone, Default)]
struct File {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Block number → its versions since the durable one, oldest first.
    pending: HashMap<usize, Vec<Vec<u8>>>,
    /// Block number → how many of its versions were ever written, so that a flush can name the
    /// versions it covers whatever other flushes made durable meanwhile.
    written: HashMap<usize, usize>,
    /// Flushes started and not yet returned: their id → each pending block's written count at
    /// the start (versions up to it a successful flush makes durable) and the file's length then.
    flushing: HashMap<u64, (Vec<(usize, usize)>, usize)>,
}

impl File {
    fn block(&self, block: usize) -> Vec<u8> {
        let mut content = vec![0u8; BLOCK];
        let start = block * BLOCK;
        if start < self.current.len() {
            let end = self.current.len().min(start + BLOCK);
            content[..end - start].copy_from_slice(&self.current[start..end]);
        }
        content
    }

    fn write(&mut self, offset: usize, data: &[u8], durable: bool) {
        let end = offset + data.len();
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[offset..end].copy_from_slice(data);
        if data.is_empty() {
            return;
        }
        for block in offset / BLOCK..=(end - 1) / BLOCK {
            let content = self.block(block);
            *self.written.entry(block).or_default() += 1;
            if durable {
                self.pending.remove(&block);
                set_block(&mut self.durable, block, &content);
            } else {
                self.pending.entry(block).or_default().push(content);
            }
        }
    }

    fn flush_starts(&mut self, id: u64) {
        let counts = self
            .pending
            .keys()
            .map(|&b| (b, self.written[&b]))
            .collect();
        self.flushing.insert(id, (counts, self.current.len()));
    }

    fn flush_returned(&mut self, id: u64) {
        let Some((counts, len)) = self.flushing.remove(&id) else {
            return;
        };
        for (block, covered) in counts {
            let Some(versions) = self.pending.get_mut(&block) else {
                continue;
            };
            // The pending versions are the newest ones written; those the flush covers are the
            // ones up to `covered` (fewer, or none, if another flush or an O_DSYNC write made
            // some durable meanwhile).
            let first_pending = self.written[&block] - versions.len();
            let count = covered.saturating_sub(first_pending).min(versions.len());
            if count == 0 {
                continue;
            }
            let newest = versions[count - 1].clone();
            versions.drain(..count);
            if versions.is_empty() {
                self.pending.remove(&block);
            }
            set_block(&mut self.durable, block, &newest);
        }
        if self.durable.len() < len {
            self.durable.resize(len, 0);
        }
    }

    fn truncate(&mut self, len: usize) {
        self.current.resize(len, 0);
        self.durable.resize(len, 0);
        self.pending.retain(|&block, _| block * BLOCK < len);
    }
}

/// Writes `content` as block `block` of `image`, growing it if it is shorter.
fn set_block(image: &mut Vec<u8>, block: usize, content: &[u8]) {
    let start = block * BLOCK;
    if image.len() < start + BLOCK {
        image.resize(start + BLOCK, 0);
    }
    image[start..start + BLOCK].copy_from_slice(content);
}

/// The files of one store directory as a trace left them.
#[derive(Clone, Default)]
pub struct Files {
    files: HashMap<String, File>,
    /// Files created whose names no flush of the directory has covered yet: a power cut may
    /// leave them out (POSIX promises a new name only once its directory is flushed).
    unnamed: HashSet<String>,
    /// Directory flushes started and not yet returned: their id → the files unnamed then.
    naming: HashMap<u64, Vec<String>>,
    /// Trace records applied by the last `apply_trace_prefix`.
    records: usize,
}

impl Files {
    /// The files of `dir` (LMDB's lock file aside) as they are now, all durable: the state a
    /// traced run starts from.
    pub fn from_dir(dir: &Path) -> Files {
        let mut files = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name == "lock.mdb" || !entry.path().is_file() {
                    continue;
                }
                let content = std::fs::read(entry.path()).expect("read a store file");
                files.insert(
                    name,
                    File {
                        durable: content.clone(),
                        current: content,
                        ..File::default()
                    },
                );
            }
        }
        Files {
            files,
            ..Files::default()
        }
    }

    /// Applies the trace at `path`; the number of writes and of flushes that returned in it.
    pub fn apply_trace(&mut self, path: &Path) -> (usize, usize) {
        self.apply_trace_prefix(path, usize::MAX)
    }

    /// The whole records in the trace at `path`.
    pub fn trace_records(path: &Path) -> usize {
        let mut files = Files::default();
        files.apply_trace_prefix(path, usize::MAX);
        files.records
    }

    /// Applies the first `records` records of the trace at `path` (the files as a power cut at
    /// that moment finds them); the number of writes and of flushes that returned among them.
    pub fn apply_trace_prefix(&mut self, path: &Path, records: usize) -> (usize, usize) {
        let trace = std::fs::read(path).expect("read the trace");
        let mut names: HashMap<u8, String> = HashMap::new();
        let (mut writes, mut flushes) = (0, 0);
        let mut at = 0;
        self.records = 0;
        while at + 4 <= trace.len() && self.records < records {
            let len = u32::from_le_bytes(trace[at..at + 4].try_into().unwrap()) as usize;
            let Some(record) = trace.get(at + 4..at + 4 + len) else {
                break; // cut short by the kill
            };
            at += 4 + len;
            self.records += 1;
            assert!(len >= 12, "a trace record too short to be one");
            let (op, file) = (record[0], record[1]);
            let arg = u64::from_le_bytes(record[4..12].try_into().unwrap());
            let bytes = &record[12..];
            match op {
                1 => {
                    let name = String::from_utf8_lossy(bytes).to_string();
                    self.files.entry(name.clone()).or_default();
                    names.insert(file, name);
                    continue;
                }
                8 => {
                    let unnamed = self.unnamed.iter().cloned().collect();
                    self.naming.insert(arg, unnamed);
                    continue;
                }
                9 => {
                    for name in self.naming.remove(&arg).unwrap_or_default() {
                        self.unnamed.remove(&name);
                    }
                    continue;
                }
                10 => {
                    // Renamed: the contents go by the new name, not yet durable in the directory
                    // (the old name, in a directory never flushed, is left out of the states).
                    let from = names.get(&file).expect("a file named before its rename");
                    let to = names.get(&(arg as u8)).expect("a new name named before");
                    let moved = self.files.remove(from).unwrap_or_default();
                    self.unnamed.remove(from);
                    self.files.insert(to.clone(), moved);
                    self.unnamed.insert(to.clone());
                    continue;
                }
                _ => {}
            }
            let name = names.get(&file).expect("a file named before its use");
            let state = self.files.get_mut(name).expect("a named file");
            match op {
                2 | 3 => {
                    state.write(arg as usize, bytes, op == 3);
                    writes += 1;
                }
                4 => state.flush_starts(arg),
                5 => {
                    state.flush_returned(arg);
                    flushes += 1;
                }
                6 => state.truncate(arg as usize),
                7 => {
                    self.unnamed.insert(name.clone());
                }
                _ => panic!("unknown trace record {op}"),
            }
        }
        (writes, flushes)
    }

    /// Blocks the disk might hold in more than one version.
    pub fn uncertain_blocks(&self) -> usize {
        self.files.values().map(|f| f.pending.len()).sum()
    }

    /// Writes into `dir` one state the disk could be in after a power cut now: each uncertain
    /// block in its durable version or one written since, and each file whose name is not yet
    /// durable there or not, picked with `pick(choices)`, which returns an index below `choices`
    /// (0: the durable version, or the file left out).
    pub fn power_cut(&self, dir: &Path, mut pick: impl FnMut(usize) -> usize) {
        std::fs::create_dir_all(dir).expect("create the image directory");
        let mut names: Vec<&String> = self.files.keys().collect();
        names.sort();
        for name in names {
            // A new name not yet flushed with its directory: there (1) or not (0).
            if self.unnamed.contains(name) && pick(2) == 0 {
                continue;
            }
            let file = &self.files[name];
            let mut image = file.durable.clone();
            let mut blocks: Vec<_> = file.pending.iter().collect();
            blocks.sort_by_key(|(&block, _)| block);
            for (&block, versions) in blocks {
                let choice = pick(versions.len() + 1);
                if choice > 0 {
                    set_block(&mut image, block, &versions[choice - 1]);
                }
            }
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create an image subdirectory");
            }
            std::fs::write(path, image).expect("write an image file");
        }
    }
}
