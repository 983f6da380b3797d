//! The views of a batch folded on several threads; and [`each_on_a_thread`] for other work the
//! apply path splits (the initial load's row pass and merges).
//!
//! Views share nothing they write (see [`super::view`]), so each is folded whole by one thread;
//! the threads take views one at a time, the costliest of the last batch first, so a view that
//! takes most of a batch starts at once and the others fill the remaining threads. Threads are
//! scoped to the batch: they borrow the batch and the store, and starting them costs tens of
//! microseconds, which is why small batches fold on the calling thread.

use std::cmp::Reverse;
use std::sync::{Mutex, PoisonError};
use std::thread::Builder;

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

/// Runs `f` on every item, the first on the calling thread and each other on a scoped thread
/// named `name` (on the calling thread if the system refuses one); returns the results in item
/// order.
pub(super) fn each_on_a_thread<T, R, F>(name: &str, items: Vec<T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    // Each item is taken from its slot exactly once, by whichever thread runs it.
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let run = |slot: &Mutex<Option<T>>| {
        let item = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        item.map(&f)
    };
    let done: Vec<Option<R>> = std::thread::scope(|scope| {
        let others: Vec<_> = slots
            .iter()
            .skip(1)
            .map(|slot| {
                let thread = Builder::new().name(name.into());
                (slot, thread.spawn_scoped(scope, || run(slot)))
            })
            .collect();
        let mut out = vec![slots.first().and_then(run)];
        for (slot, handle) in others {
            out.push(match handle.map(|h| h.join()) {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => run(slot),
            });
        }
        out
    });
    done.into_iter().flatten().collect()
}
