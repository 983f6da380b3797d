//! The views of a batch folded on several threads; and [`each_on_a_thread`] for other work the
//! apply path splits (the initial load's row pass and merges).
//!
//! Views share nothing they write (see [`super::view`]), so each is folded whole by one thread;
//! the threads take views one at a time, the costliest of the last batch first, so a view that
//! takes most of a batch starts at once and the others fill the remaining threads. Threads are
//! scoped to the batch: they borrow the batch and the store, and starting them costs tens of
//! microseconds, which is why small batches fold on the calling thread. Threads out of views
//! take the other jobs the caller gives (a date change reads its next rows there), so no
//! thread beyond the setting competes with the views for the cores.

use std::cmp::Reverse;
use std::sync::{Mutex, PoisonError};
use std::thread::Builder;

use crate::change::TargetChange;
use crate::state::store::Store;

use super::rows::RowDelta;
use super::view::ViewFold;
use super::MaintainError;

/// Runs `fold` once for every view, on up to `threads` threads (the caller's among them), and
/// returns the results in view order; and then each of `jobs`, on the threads out of views,
/// results in job order: work that fills the threads the views leave idle (a date change's
/// next rows read while one view takes most of a part), without a thread beyond `threads`
/// competing with the views for the cores.
pub(super) fn each_view_then<T, F, R, G>(
    views: &mut [ViewFold],
    threads: usize,
    fold: F,
    jobs: Vec<G>,
) -> (Vec<T>, Vec<R>)
where
    T: Send,
    F: Fn(usize, &mut ViewFold) -> T + Sync,
    R: Send,
    G: FnOnce() -> R + Send,
{
    let threads = threads.min(views.len() + jobs.len());
    if threads <= 1 {
        let folded = (views.iter_mut().enumerate())
            .map(|(v, view)| fold(v, view))
            .collect();
        return (folded, jobs.into_iter().map(|job| job()).collect());
    }
    let mut queue: Vec<(usize, &mut ViewFold)> = views.iter_mut().enumerate().collect();
    queue.sort_by_key(|(_, view)| Reverse(view.cost));
    let count = queue.len();
    let queue = Mutex::new(queue.into_iter());
    let done = Mutex::new(Vec::with_capacity(count));
    let job_count = jobs.len();
    let jobs = Mutex::new(jobs.into_iter().enumerate());
    let jobs_done = Mutex::new(Vec::with_capacity(job_count));
    let work = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((v, view)) = next else { break };
            let result = fold(v, view);
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((v, result));
        }
        loop {
            let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((j, job)) = next else { break };
            let result = job();
            (jobs_done.lock().unwrap_or_else(PoisonError::into_inner)).push((j, result));
        }
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
    (in_order(done), in_order(jobs_done))
}

/// The results gathered as `(position, result)`, in position order.
fn in_order<T>(done: Mutex<Vec<(usize, T)>>) -> Vec<T> {
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Every view folds `deltas` (those of its table, or those meant for it alone) into its first
/// stage, on up to `threads` threads, then, given `before` (the dates its rows were last
/// contributed at), finalizes its touched groups; without, it is a part of a date change's row
/// pass, and only a first stage holding many groups is finalized
/// ([`ViewFold::finalize_early`]). The views' writes stay with them for the caller to apply.
/// Then `jobs` run on the threads out of views ([`each_view_then`]).
pub(super) fn fold_views_then<R: Send>(
    views: &mut [ViewFold],
    store: &Store,
    threads: usize,
    deltas: &[RowDelta<'_>],
    before: Option<&[i32]>,
    jobs: Vec<impl FnOnce() -> R + Send>,
) -> (Result<Vec<Vec<TargetChange>>, MaintainError>, Vec<R>) {
    let fold = |v: usize, view: &mut ViewFold| {
        let started = std::time::Instant::now();
        let out = (|| {
            if view.failed.is_none() {
                for d in deltas {
                    let date = match d.only {
                        None if d.table == view.table => view.date,
                        Some((only, date)) if only == v => date,
                        _ => continue,
                    };
                    view.contribute(store, 0, &d.image, d.sign, date)?;
                }
            }
            match before {
                Some(before) => view.propagate(store, before[v]),
                None => view.finalize_early(store).map(|()| vec![]),
            }
        })();
        view.cost = started.elapsed();
        view.batch_cost += view.cost;
        out
    };
    let (folded, after) = each_view_then(views, threads, fold, jobs);
    (folded.into_iter().collect(), after)
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
