//! The file sink: JSON Lines appended to a file, rotated by size
//! (`path` → `path.1` → `path.2` …). Each request is written and fsynced
//! before it counts as delivered.

use super::backoff::Outcome;
use super::config::DestinationConfig;
use super::event::LoggedEvent;
use super::sink::{SendFuture, Sink};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A JSON Lines file destination.
pub struct FileSink {
    inner: Arc<Mutex<FileState>>,
}

struct FileState {
    path: PathBuf,
    rotate_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    /// Builds the sink from a validated config.
    pub fn new(cfg: &DestinationConfig) -> FileSink {
        FileSink {
            inner: Arc::new(Mutex::new(FileState {
                path: cfg.path.clone().unwrap_or_default(),
                rotate_bytes: cfg.rotate_bytes().max(1),
                keep: cfg.keep(),
                file: None,
                size: 0,
            })),
        }
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FileState {
    fn write(&mut self, events: &[LoggedEvent]) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(&e.body);
            buf.push(b'\n');
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&buf)?;
        f.sync_data()?;
        self.size += buf.len() as u64;
        if self.size >= self.rotate_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || {
                let mut st = inner.lock().unwrap_or_else(|e| e.into_inner());
                let res = st.write(&events);
                if res.is_err() {
                    // Reopen next time; a partial line may remain and is followed by a full copy.
                    st.file = None;
                }
                res
            })
            .await;
            match res {
                Ok(Ok(())) => Outcome::Delivered,
                Ok(Err(e)) => Outcome::Retry {
                    status: None,
                    error: format!("file write failed: {e}"),
                    retry_after: None,
                },
                Err(e) => Outcome::Retry {
                    status: None,
                    error: format!("file writer panicked: {e}"),
                    retry_after: None,
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_lines_and_rotates() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out/events.jsonl");
        let cfg: DestinationConfig = toml::from_str(&format!(
            "name='f'\ntype='file'\npath='{}'\nrotate_bytes=30\nkeep=2\n",
            path.display()
        ))
        .unwrap();
        let sink = FileSink::new(&cfg);
        for i in 0..5u64 {
            let e = LoggedEvent {
                offset: i,
                body: bytes::Bytes::from(format!("{{\"n\":{i}}}")),
                meta: Default::default(),
                received_ms: None,
            };
            assert_eq!(sink.send(vec![e]).await, Outcome::Delivered);
        }
        // 8 bytes a line: rotation after the 4th line; .1 holds lines 0..4.
        assert_eq!(
            std::fs::read_to_string(rotated(&path, 1))
                .unwrap()
                .lines()
                .count(),
            4
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":4}\n");
    }
}
