//! A crash-simulating, fault-injecting [`Storage`] kept in memory.
//!
//! Every file remembers what is durable (as of its last `sync_data`) and the
//! writes made since; the namespace remembers which names are durable (as of
//! the last `sync_dir`). [`CrashStorage::crash_image`] builds the storage a
//! machine would find after power loss: each unsynced write is kept, dropped,
//! torn, zeroed or garbled, and each unsynced create or remove may or may not
//! have happened. Faults: failing `sync_data`, `ENOSPC` on write, and a crash
//! triggered at the n-th sync point.

use super::storage::{LockGuard, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A tiny deterministic generator (SplitMix64) so crash images replay from a seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct SimFile {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Op>,
    /// Simulated time of the last write.
    modified: Duration,
}

type FileRef = Arc<Mutex<SimFile>>;

#[derive(Default)]
struct State {
    /// The namespace as processes see it.
    names: BTreeMap<PathBuf, FileRef>,
    /// The namespace as of the last directory sync.
    durable_names: BTreeMap<PathBuf, FileRef>,
    dirs: BTreeSet<PathBuf>,
    /// Fail every `sync_data` / `sync_dir` from now on.
    fail_sync: bool,
    /// Fail writes with ENOSPC while set.
    disk_full: bool,
    /// Reported by `available_space`.
    available: Option<u64>,
    /// Sync points seen so far (`sync_data` and `sync_dir` calls).
    sync_points: u64,
    /// Crash when the sync point with this number is reached (before it syncs).
    crash_at: Option<(u64, u64)>,
    /// The image taken at the planned crash.
    crashed: Option<CrashStorage>,
    /// After a planned crash every operation fails.
    dead: bool,
    /// While set, file syncs wait (to observe what happens meanwhile).
    hold_syncs: bool,
    /// File syncs waiting right now.
    held_syncs: u64,
    /// Paths locked with `try_lock` (not part of a crash image).
    locks: BTreeSet<PathBuf>,
    /// The simulated clock (advanced by tests), stamped on writes.
    clock: Duration,
}

/// In-memory storage with crash simulation; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct CrashStorage {
    state: Arc<Mutex<State>>,
    /// Signals changes of `hold_syncs` / `held_syncs`.
    gate: Arc<Condvar>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn dead_err() -> io::Error {
    io::Error::other("simulated machine crashed")
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data } => {
            let end = *pos as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*pos as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

impl CrashStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every fsync (file or directory) fails with EIO.
    pub fn fail_syncs(&self, on: bool) {
        lock(&self.state).fail_sync = on;
    }

    /// While on, every write fails with ENOSPC.
    pub fn set_disk_full(&self, on: bool) {
        lock(&self.state).disk_full = on;
    }

    /// Moves the simulated clock forward (it starts at the Unix epoch).
    pub fn advance_clock(&self, by: Duration) {
        lock(&self.state).clock += by;
    }

    /// Sets what `available_space` reports.
    pub fn set_available_space(&self, bytes: Option<u64>) {
        lock(&self.state).available = bytes;
    }

    /// While `on`, every file sync blocks before taking effect; turning it
    /// off lets them go on.
    pub fn hold_syncs(&self, on: bool) {
        lock(&self.state).hold_syncs = on;
        self.gate.notify_all();
    }

    /// Blocks until some file sync is waiting on [`Self::hold_syncs`].
    pub fn wait_for_held_sync(&self) {
        let mut st = lock(&self.state);
        while st.held_syncs == 0 {
            st = self.gate.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How many sync points (file or directory fsyncs) have been reached.
    pub fn sync_points(&self) -> u64 {
        lock(&self.state).sync_points
    }

    /// Plans a crash at sync point number `n` (counting from 1 over the
    /// storage's life): the image is taken before that sync takes effect,
    /// using `seed` for the fate of unsynced writes; then every operation
    /// fails, as if the machine were gone.
    pub fn crash_at_sync_point(&self, n: u64, seed: u64) {
        lock(&self.state).crash_at = Some((n, seed));
    }

    /// The image taken by a planned crash, once it happened.
    pub fn crashed_image(&self) -> Option<CrashStorage> {
        lock(&self.state).crashed.clone()
    }

    /// What the disk would hold after power loss now; the fate of each
    /// unsynced write and directory entry is drawn from `seed`.
    pub fn crash_image(&self, seed: u64) -> CrashStorage {
        let st = lock(&self.state);
        Self::image_of(&st, &mut SimRng::new(seed))
    }

    /// The contents of a file as a process sees it now (for tests).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.names.get(path).map(|f| lock(f).data.clone())
    }

    /// Replaces the visible and durable contents of a file (for tests that
    /// corrupt a log on purpose).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = lock(&self.state);
        let file = st.names.entry(path.to_path_buf()).or_default().clone();
        st.durable_names.insert(path.to_path_buf(), file.clone());
        let mut f = lock(&file);
        f.data = bytes.clone();
        f.durable = bytes;
        f.pending.clear();
    }

    fn image_of(st: &State, rng: &mut SimRng) -> CrashStorage {
        let mut names = BTreeMap::new();
        let all: BTreeSet<&PathBuf> = st.names.keys().chain(st.durable_names.keys()).collect();
        for path in all {
            let chosen = match (st.names.get(path), st.durable_names.get(path)) {
                (Some(now), Some(then)) if Arc::ptr_eq(now, then) => Some(now),
                (Some(now), Some(then)) => Some(if rng.below(2) == 0 { now } else { then }),
                // Created or removed without a directory sync: either outcome.
                (Some(f), None) | (None, Some(f)) => (rng.below(2) == 0).then_some(f),
                (None, None) => None,
            };
            if let Some(file) = chosen {
                let f = lock(file);
                let mut bytes = f.durable.clone();
                for op in &f.pending {
                    match (rng.below(6), op) {
                        (0 | 1, op) => apply(&mut bytes, op),
                        (2, _) => {}
                        (3, Op::Write { pos, data }) => {
                            let keep = rng.below(data.len() as u64 + 1) as usize;
                            apply(
                                &mut bytes,
                                &Op::Write {
                                    pos: *pos,
                                    data: data[..keep].to_vec(),
                                },
                            );
                        }
                        (4, Op::Write { pos, data }) => {
                            apply(
                                &mut bytes,
                                &Op::Write {
                                    pos: *pos,
                                    data: vec![0; data.len()],
                                },
                            );
                        }
                        (_, Op::Write { pos, data }) => {
                            let junk = (0..data.len()).map(|_| rng.next_u64() as u8).collect();
                            apply(
                                &mut bytes,
                                &Op::Write {
                                    pos: *pos,
                                    data: junk,
                                },
                            );
                        }
                        (_, Op::SetLen(_)) => {}
                    }
                }
                let file = Arc::new(Mutex::new(SimFile {
                    data: bytes.clone(),
                    durable: bytes,
                    pending: Vec::new(),
                    modified: f.modified,
                }));
                names.insert(path.clone(), file);
            }
        }
        let state = State {
            durable_names: names.clone(),
            names,
            dirs: st.dirs.clone(),
            ..State::default()
        };
        CrashStorage {
            state: Arc::new(Mutex::new(state)),
            gate: Arc::default(),
        }
    }

    /// Counts a sync point; performs a planned crash. Returns Err when the
    /// sync must fail.
    fn sync_point(st: &mut State) -> io::Result<()> {
        if st.dead {
            return Err(dead_err());
        }
        st.sync_points += 1;
        if let Some((n, seed)) = st.crash_at {
            if st.sync_points == n {
                let image = Self::image_of(st, &mut SimRng::new(seed));
                st.crashed = Some(image);
                st.dead = true;
                return Err(dead_err());
            }
        }
        if st.fail_sync {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }

    fn handle(&self, file: FileRef, writable: bool) -> Arc<dyn StorageFile> {
        Arc::new(SimHandle {
            storage: self.clone(),
            file,
            writable,
        })
    }
}

struct SimHandle {
    storage: CrashStorage,
    file: FileRef,
    writable: bool,
}

impl SimHandle {
    fn check_write(&self) -> io::Result<()> {
        let st = lock(&self.storage.state);
        if st.dead {
            return Err(dead_err());
        }
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        if st.disk_full {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

impl StorageFile for SimHandle {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if lock(&self.storage.state).dead {
            return Err(dead_err());
        }
        let f = lock(&self.file);
        let start = (pos as usize).min(f.data.len());
        let n = buf.len().min(f.data.len() - start);
        buf[..n].copy_from_slice(&f.data[start..start + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_write()?;
        let now = lock(&self.storage.state).clock;
        let mut f = lock(&self.file);
        f.modified = now;
        let op = Op::Write {
            pos,
            data: buf.to_vec(),
        };
        apply(&mut f.data, &op);
        f.pending.push(op);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut st = lock(&self.storage.state);
        while st.hold_syncs {
            st.held_syncs += 1;
            self.storage.gate.notify_all();
            st = self
                .storage
                .gate
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
            st.held_syncs -= 1;
        }
        CrashStorage::sync_point(&mut st)?;
        let mut f = lock(&self.file);
        f.durable = f.data.clone();
        f.pending.clear();
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.file).data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        // Shrinking needs no space, so a full disk does not stop it.
        let full = lock(&self.storage.state).disk_full;
        if !(full && len <= lock(&self.file).data.len() as u64) {
            self.check_write()?;
        }
        let mut f = lock(&self.file);
        let op = Op::SetLen(len);
        apply(&mut f.data, &op);
        f.pending.push(op);
        Ok(())
    }
}

impl Storage for CrashStorage {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        if st.dead {
            return Err(dead_err());
        }
        if !st.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn exists(&self, path: &Path) -> bool {
        let st = lock(&self.state);
        st.names.contains_key(path) || st.dirs.contains(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        for anc in dir.ancestors() {
            if !anc.as_os_str().is_empty() {
                st.dirs.insert(anc.to_path_buf());
            }
        }
        Ok(())
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = lock(&self.state);
        if st.dead {
            return Err(dead_err());
        }
        if st.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let file = FileRef::default();
        st.names.insert(path.to_path_buf(), file.clone());
        drop(st);
        Ok(self.handle(file, true))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = lock(&self.state).names.get(path).cloned();
        let file = file.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.handle(file, true))
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = lock(&self.state).names.get(path).cloned();
        let file = file.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.handle(file, false))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.dead {
            return Err(dead_err());
        }
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        Self::sync_point(&mut st)?;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, f) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), f.clone());
            }
        }
        Ok(())
    }
    fn available_space(&self, _dir: &Path) -> Option<u64> {
        lock(&self.state).available
    }
    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        let file = lock(&self.state).names.get(path).cloned();
        let file = file.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let at = lock(&file).modified;
        Ok(SystemTime::UNIX_EPOCH + at)
    }
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + lock(&self.state).clock
    }
    fn try_lock(&self, path: &Path) -> io::Result<LockGuard> {
        if !lock(&self.state).locks.insert(path.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }
}

/// Releases a simulated lock when dropped.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_and_unsynced_may_not() {
        let s = CrashStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let p = dir.join("f");
        let f = s.create(&p).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        s.sync_dir(dir).unwrap();
        f.write_all_at(b"-volatile", 7).unwrap();
        let mut outcomes = BTreeSet::new();
        for seed in 0..64 {
            let img = s.crash_image(seed);
            let bytes = img.read_file(&p).expect("synced file survives");
            assert!(bytes.starts_with(b"durable"));
            outcomes.insert(bytes);
        }
        assert!(
            outcomes.len() > 2,
            "crash images should differ: {outcomes:?}"
        );
    }

    #[test]
    fn unsynced_create_may_vanish() {
        let s = CrashStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let f = s.create(&dir.join("new")).unwrap();
        f.sync_data().unwrap();
        let kept = (0..32)
            .filter(|seed| s.crash_image(*seed).read_file(&dir.join("new")).is_some())
            .count();
        assert!(kept > 0 && kept < 32);
    }

    #[test]
    fn planned_crash_kills_the_machine() {
        let s = CrashStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let f = s.create(&dir.join("f")).unwrap();
        s.crash_at_sync_point(2, 1);
        f.sync_data().unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(s.crashed_image().is_some());
    }

    #[test]
    fn faults_are_reported() {
        let s = CrashStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let f = s.create(&dir.join("f")).unwrap();
        s.set_disk_full(true);
        assert_eq!(
            f.write_all_at(b"x", 0).unwrap_err().raw_os_error(),
            Some(28)
        );
        s.set_disk_full(false);
        s.fail_syncs(true);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
    }
}
