//! Bulk writes for the initial load: table files built outside RocksDB and ingested whole.
//!
//! The initial load writes one row image per source row and one time-index entry per row in a
//! window, and reads none of them back until it is done. Put one by one, each went through a
//! memtable's skiplist and a flush, about a third of `init`'s CPU (profile of 2026-12-06). Here
//! the entries are gathered in one buffer, sorted when it fills and spilled as a sorted run to a
//! scratch file; at the end the runs are merged into non-overlapping table files
//! (`SstFileWriter`) that RocksDB ingests as they are, into the lowest level free for them: the
//! bottom one, with no compaction to follow, since a load starts from an empty state (`init
//! --resync`'s wipe deletes the old table files, see [`super::store::Store::wipe`]).
//!
//! Memory stays at the buffer's budget however large the table. A later put of a key wins over
//! an earlier one, as with [`super::store::Store::put`]. Crash safety is the caller's: files are
//! ingested before the load is marked done, a crash before that rebuilds, and [`BulkWriter`]
//! clears its scratch directory when it starts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rocksdb::{Options, SstFileWriter};

use super::keys;
use super::scratch::{ScratchReader, ScratchWriter};
use super::store::StoreError;
use super::tuning;

/// The default bytes of keys and values held before a run is sorted and spilled.
pub const RUN_BYTES: usize = 16 << 20;
/// Each run's read buffer in the merge: a table of 5M rows spills some thirty runs per column
/// family, and two merges may run at once beside the next table's load, so this is kept small
/// (1 MB buffers were about 60 MB of `init`'s peak).
const READ_BUFFER: usize = 128 << 10;
/// Table files are cut at about this size (RocksDB's default target for level 1).
const FILE_BYTES: u64 = 64 << 20;

/// A bulk writer's table files, ready to ingest: sorted, not overlapping one another.
pub struct TableFiles {
    pub cf: &'static str,
    /// The scratch directory they are in.
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Entries put (a key put twice counts twice).
    pub entries: u64,
}

/// Entries not sorted yet: keys and values back to back in `buf`, and per entry its offset,
/// key length and value length.
#[derive(Default)]
struct Entries {
    buf: Vec<u8>,
    index: Vec<(usize, u32, u32)>,
    /// The sort's working order (see [`Entries::for_each_sorted`]), kept with the buffer so
    /// that a reused buffer sorts without allocating: a new one per run was tens of megabytes
    /// of fresh pages for a run of time-index entries.
    order: Vec<(u64, usize, u32, u32)>,
}

/// One column family's bulk entries: a buffer filling, and a thread that sorts and spills full
/// ones as runs while the next fills (the caller's thread only copies bytes).
pub struct BulkWriter {
    cf: &'static str,
    dir: PathBuf,
    pending: Entries,
    budget: usize,
    spiller: Option<Spiller>,
    entries: u64,
    spills: usize,
}

/// The thread spilling full buffers, one at a time (a second full buffer waits for it), and
/// handing them back emptied: refilled, their pages are not faulted in afresh.
struct Spiller {
    tx: mpsc::SyncSender<Entries>,
    /// (In a mutex only so that a load's writers can sit in a structure threads share.)
    back: std::sync::Mutex<mpsc::Receiver<Entries>>,
    done: JoinHandle<Result<Vec<PathBuf>, StoreError>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Bulk(format!("{what} {}: {e}", path.display()))
}

impl BulkWriter {
    /// A writer for `cf` whose scratch files go to `dir` (emptied first: it may hold a crashed
    /// load's runs), spilling every `budget` bytes.
    pub fn new(cf: &'static str, dir: PathBuf, budget: usize) -> Result<BulkWriter, StoreError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("clearing", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(BulkWriter {
            cf,
            dir,
            pending: Entries::default(),
            budget,
            spiller: None,
            entries: 0,
            spills: 0,
        })
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let e = &mut self.pending;
        e.index
            .push((e.buf.len(), key.len() as u32, value.len() as u32));
        e.buf.extend_from_slice(key);
        e.buf.extend_from_slice(value);
        self.entries += 1;
        if e.buf.len() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the full buffer to the spilling thread (started on the first spill).
    fn spill(&mut self) -> Result<(), StoreError> {
        if self.spiller.is_none() {
            let (tx, rx) = mpsc::sync_channel::<Entries>(0);
            let (give_back, back) = mpsc::sync_channel::<Entries>(1);
            let dir = self.dir.clone();
            let done = std::thread::Builder::new()
                .name("deltamv-spill".into())
                .spawn(move || {
                    let mut runs = Vec::new();
                    for mut entries in rx {
                        let path = dir.join(format!("run-{:05}", runs.len()));
                        write_run(&path, &mut entries)?;
                        runs.push(path);
                        entries.buf.clear();
                        entries.index.clear();
                        // Kept for reuse if the writer has no spare buffer yet.
                        let _ = give_back.try_send(entries);
                    }
                    Ok(runs)
                })
                .map_err(|e| StoreError::Bulk(format!("starting a thread: {e}")))?;
            let back = std::sync::Mutex::new(back);
            self.spiller = Some(Spiller { tx, back, done });
        }
        let spare = (self.spiller.as_ref())
            .and_then(|s| s.back.lock().ok().and_then(|back| back.try_recv().ok()));
        let full = std::mem::replace(&mut self.pending, spare.unwrap_or_default());
        self.spills += 1;
        match &self.spiller {
            Some(s) => s.tx.send(full).map_err(|_| self.spiller_gone()),
            None => Err(self.spiller_gone()),
        }
    }

    fn spiller_gone(&self) -> StoreError {
        StoreError::Bulk(format!("spilling {}: the thread stopped", self.cf))
    }

    /// Writes every entry into non-overlapping table files, in key order, for
    /// [`super::store::Store::ingest`].
    pub fn finish(self) -> Result<TableFiles, StoreError> {
        let (cf, dir, entries) = (self.cf, self.dir.clone(), self.entries);
        let files = self.write_tables(&tuning::bulk_file_options(cf))?;
        crate::failpoint::hit("snapshot_files_written");
        Ok(TableFiles {
            cf,
            dir,
            files,
            entries,
        })
    }

    fn write_tables(mut self, opts: &Options) -> Result<Vec<PathBuf>, StoreError> {
        let mut tables = Tables::new(&self.dir, opts);
        let Some(spiller) = self.spiller.take() else {
            self.pending.for_each_sorted(|k, v| tables.put(k, v))?;
            return tables.finish();
        };
        if !self.pending.index.is_empty() {
            let last = std::mem::take(&mut self.pending);
            spiller.tx.send(last).map_err(|_| self.spiller_gone())?;
        }
        drop(spiller.tx);
        let runs = spiller.done.join().map_err(|_| {
            StoreError::Bulk(format!("spilling {}: the thread panicked", self.cf))
        })??;
        let mut readers = Vec::with_capacity(runs.len());
        for path in &runs {
            let mut reader = RunReader::open(path)?;
            if reader.advance()? {
                readers.push(reader);
            }
        }
        // A min-heap of runs by their current key, the newest run first among equal keys: of
        // a key put more than once, the newest run's entry is written and the others skipped.
        // Keys and values stay in each run's own buffers, reused entry after entry.
        let before = |readers: &[RunReader], a: usize, b: usize| {
            readers[a].key.cmp(&readers[b].key).then(b.cmp(&a)).is_lt()
        };
        let mut heap: Vec<usize> = Vec::with_capacity(readers.len());
        for r in 0..readers.len() {
            heap.push(r);
            let at = heap.len() - 1;
            sift_up(&mut heap, at, |a, b| before(&readers, a, b));
        }
        let mut last: Vec<u8> = Vec::new();
        let mut written = false;
        while let Some(&r) = heap.first() {
            if !written || readers[r].key != last {
                tables.put(&readers[r].key, &readers[r].value)?;
                last.clear();
                last.extend_from_slice(&readers[r].key);
                written = true;
            }
            if !readers[r].advance()? {
                let end = heap.len() - 1;
                heap.swap(0, end);
                heap.pop();
            }
            sift_down(&mut heap, 0, |a, b| before(&readers, a, b));
        }
        for run in &runs {
            std::fs::remove_file(run).map_err(|e| io_err("removing", run, e))?;
        }
        tables.finish()
    }
}

impl Entries {
    /// Hands `f` the entries in key order, the last put of a key only.
    ///
    /// Sorted by the eight bytes after the prefix all keys share (keys of one table or view
    /// begin alike), the full keys compared only where those are equal: a sort by whole keys
    /// spent most of its time in `memcmp` on that shared prefix.
    fn for_each_sorted(
        &mut self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let buf = &self.buf;
        let key = |&(at, klen, _): &(usize, u32, u32)| &buf[at..at + klen as usize];
        let shared = keys::shared_prefix(self.index.iter().map(key));
        let head = |k: &[u8]| keys::head_after(k, shared);
        let order = &mut self.order;
        order.clear();
        order.extend(self.index.iter().map(|e| (head(key(e)), e.0, e.1, e.2)));
        // Among equal keys the later put (the larger offset) sorts later, and is the one kept.
        let entry_key = |e: &(u64, usize, u32, u32)| &buf[e.1..e.1 + e.2 as usize];
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| entry_key(a).cmp(entry_key(b)).then(a.1.cmp(&b.1)))
        });
        for (i, e) in order.iter().enumerate() {
            let k = entry_key(e);
            if order.get(i + 1).is_some_and(|next| entry_key(next) == k) {
                continue;
            }
            f(k, &buf[e.1 + e.2 as usize..e.1 + (e.2 + e.3) as usize])?;
        }
        Ok(())
    }
}

/// Writes `entries` sorted to a run file that [`RunReader`] reads back.
fn write_run(path: &Path, entries: &mut Entries) -> Result<(), StoreError> {
    let mut out = ScratchWriter::create(path, 1 << 20).map_err(|e| io_err("creating", path, e))?;
    entries.for_each_sorted(|k, v| {
        out.write_all(&(k.len() as u32).to_le_bytes())
            .and_then(|_| out.write_all(&(v.len() as u32).to_le_bytes()))
            .and_then(|_| out.write_all(k))
            .and_then(|_| out.write_all(v))
            .map_err(|e| io_err("writing", path, e))
    })?;
    out.finish().map_err(|e| io_err("writing", path, e))
}

/// Table files cut at [`FILE_BYTES`], written in key order.
struct Tables<'a> {
    dir: &'a Path,
    opts: &'a Options,
    writer: Option<SstFileWriter<'a>>,
    files: Vec<PathBuf>,
}

impl<'a> Tables<'a> {
    fn new(dir: &'a Path, opts: &'a Options) -> Self {
        Tables {
            dir,
            opts,
            writer: None,
            files: Vec::new(),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.file_size() >= FILE_BYTES)
        {
            self.close()?;
        }
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let path = self.dir.join(format!("table-{:05}.sst", self.files.len()));
                let w = SstFileWriter::create(self.opts);
                w.open(&path)?;
                self.files.push(path);
                self.writer.insert(w)
            }
        };
        writer.put(key, value)?;
        Ok(())
    }

    fn close(&mut self) -> Result<(), StoreError> {
        if let Some(mut w) = self.writer.take() {
            w.finish()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>, StoreError> {
        self.close()?;
        Ok(std::mem::take(&mut self.files))
    }
}

/// Restores the heap order of `heap` after its element at `i` moved up (`before`: the
/// strict order, smallest first).
fn sift_up(heap: &mut [usize], mut i: usize, before: impl Fn(usize, usize) -> bool) {
    while i > 0 {
        let parent = (i - 1) / 2;
        if !before(heap[i], heap[parent]) {
            break;
        }
        heap.swap(i, parent);
        i = parent;
    }
}

/// Restores the heap order after the element at `i` moved down.
fn sift_down(heap: &mut [usize], mut i: usize, before: impl Fn(usize, usize) -> bool) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut least = i;
        if l < heap.len() && before(heap[l], heap[least]) {
            least = l;
        }
        if r < heap.len() && before(heap[r], heap[least]) {
            least = r;
        }
        if least == i {
            break;
        }
        heap.swap(i, least);
        i = least;
    }
}

/// Reads back a run written by [`write_run`], one entry at a time into its own buffers.
struct RunReader {
    path: PathBuf,
    input: ScratchReader,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl RunReader {
    fn open(path: &Path) -> Result<RunReader, StoreError> {
        let input =
            ScratchReader::open(path, READ_BUFFER).map_err(|e| io_err("opening", path, e))?;
        Ok(RunReader {
            path: path.to_path_buf(),
            input,
            key: Vec::new(),
            value: Vec::new(),
        })
    }

    /// Reads the next entry into `key` and `value`; false at the end of the run.
    fn advance(&mut self) -> Result<bool, StoreError> {
        let mut lens = [0u8; 8];
        match self.input.read_exact(&mut lens) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io_err("reading", &self.path, e)),
        }
        let klen = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
        let vlen = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
        self.key.resize(klen, 0);
        self.value.resize(vlen, 0);
        self.input
            .read_exact(&mut self.key)
            .and_then(|_| self.input.read_exact(&mut self.value))
            .map_err(|e| io_err("reading", &self.path, e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
