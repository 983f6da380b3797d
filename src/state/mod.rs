//! Incremental state: RocksDB on a thread of its own.
//!
//! One thread owns the store and everything computed from it ([`crate::maintain::Maintainer`]);
//! the async side sends it closures and awaits their results. RocksDB calls block, and keeping them
//! off the tokio workers lets the stream reader keep draining the replication connection (and
//! answering keepalives) while a batch is folded.

pub mod bulk;
pub mod keys;
pub mod meta;
mod scratch;
pub mod store;
mod tuning;

use std::sync::mpsc;
use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
#[error("the state thread has stopped (it panicked or was shut down)")]
pub struct StateThreadGone;

type Job<T> = Box<dyn FnOnce(&mut T) + Send>;

/// A handle to the thread that owns `T`.
pub struct StateThread<T> {
    tx: Option<mpsc::Sender<Job<T>>>,
    join: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> StateThread<T> {
    pub fn spawn(mut owned: T) -> Self {
        let (tx, rx) = mpsc::channel::<Job<T>>();
        let join = std::thread::Builder::new()
            .name("deltamv-state".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut owned);
                }
            })
            .ok();
        StateThread { tx: Some(tx), join }
    }

    /// Runs `f` on the state thread and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut T) -> R + Send + 'static,
    ) -> Result<R, StateThreadGone> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job<T> = Box::new(move |owned| {
            let _ = reply_tx.send(f(owned));
        });
        self.tx
            .as_ref()
            .ok_or(StateThreadGone)?
            .send(job)
            .map_err(|_| StateThreadGone)?;
        reply_rx.await.map_err(|_| StateThreadGone)
    }
}

impl<T> Drop for StateThread<T> {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}
