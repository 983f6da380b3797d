//! The views of a batch folded on several threads.
//!
//! Views share nothing they write (see [`super::view`]), so each is folded whole by one thread;
//! the threads take views one at a time, the costliest of the last batch first, so a view that
//! takes most of a batch starts at once and the others fill the remaining threads. Threads are
//! scoped to the batch: they borrow the batch and the store, and starting them costs tens of
//! microseconds, which is why small batches fold on the calling thread.

use std::cmp::Reverse;
use std::sync::{Mutex, PoisonError};

use super::view::ViewFold;

/// Runs `fold` once for every view, on up to `threads` threads (the caller's among them), and
/// returns the results in view order.
pub(super) fn each_view<T, F>(views: &mut [ViewFold], threads: usize, fold: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut ViewFold) -> T + Sync,
{
    let threads = threads.min(views.len());
    if threads <= 1 {
        return views
            .iter_mut()
            .enumerate()
            .map(|(v, view)| fold(v, view))
            .collect();
    }
    let mut queue: Vec<(usize, &mut ViewFold)> = views.iter_mut().enumerate().collect();
    queue.sort_by_key(|(_, view)| Reverse(view.cost));
    let count = queue.len();
    let queue = Mutex::new(queue.into_iter());
    let done = Mutex::new(Vec::with_capacity(count));
    let work = || loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        let Some((v, view)) = next else { break };
        let result = fold(v, view);
        done.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((v, result));
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // Without another thread (the system refused one), the caller's does the work.
            let _ = std::thread::Builder::new()
                .name("deltamv-fold".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(v, _)| *v);
    done.into_iter().map(|(_, result)| result).collect()
}
