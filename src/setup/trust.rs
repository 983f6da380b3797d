//! Whether the state directory, the slot and the targets can be trusted to resume from.
//!
//! Its own room because this is where `init` and `run` decide between resuming and rebuilding
//! from a fresh snapshot, the choice that keeps a restored, copied or half-written state from
//! ever producing wrong numbers. Its state LSN S, the targets' T and the slot's confirmed
//! position A must satisfy A <= S <= T (see [`crate::engine`]). The decision itself is pure
//! ([`slot_verdict`], [`state_verdict`]), so each refusal and acceptance is unit-tested without a
//! server; [`resume_point`] only reads the facts it needs from the store, in the order the
//! decision needs them. Opening the store and freeing the slot (the only engine on it) live here
//! too. It must not create or load anything: that is `init`'s, after this has decided.

use std::path::Path;

use tokio_postgres::Client;

use super::{SetupError, Start};
use crate::pg::Lsn;
use crate::source::control::{self, SlotInfo};
use crate::state::meta;
use crate::state::store::{Store, StoreError};

/// How long a slot held by another walsender is waited for (a crashed engine's walsender ends
/// once the server notices the closed connection) before a second engine is refused.
const SLOT_HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the state directory holds of an earlier `init`, as far as the decision reads it.
#[derive(Clone, Copy, Debug)]
pub(super) struct StateFacts {
    /// [`initialized_lsn`]: how far the state was loaded or maintained.
    pub lsn: Lsn,
    /// The last position the engine acknowledged to the slot.
    pub acked: Lsn,
    /// It holds part of a large transaction or of a date change that was cut short.
    pub partial: bool,
}

/// Where `init` resumes: the state's LSN when state, slot and targets agree, `None` to
/// (re)initialize from a fresh snapshot; on `run`, a slot that was dropped or lost its WAL is an
/// error naming the fix. The store is read only as far as the decision needs (a value it does
/// not need can never fail it).
pub(super) fn resume_point(
    start: Start,
    targets: Option<Lsn>,
    slot: Option<&SlotInfo>,
    store: &Store,
    fingerprint: &str,
    slot_name: &str,
) -> Result<Option<Lsn>, SetupError> {
    let Some(targets) = slot_verdict(start, targets, slot, slot_name)? else {
        return Ok(None);
    };
    let state_lsn = initialized_lsn(store, fingerprint)?;
    let (Some(slot), Some(lsn)) = (slot.filter(|s| !s.lost), state_lsn) else {
        return Ok(None);
    };
    let facts = StateFacts {
        lsn,
        acked: meta::read_acked(store)?,
        partial: meta::read_partial(store)?,
    };
    match state_verdict(&facts, targets, slot.confirmed_lsn) {
        Ok(lsn) => Ok(Some(lsn)),
        Err(why) => {
            tracing::error!(problem = %why, "the state cannot be trusted: rebuilding it from a fresh snapshot (targets stay readable until then)");
            Ok(None)
        }
    }
}

/// The targets' LSN when there is something to resume (never after `--resync`, nor before the
/// targets were first loaded), so the state is to be consulted; `None` to initialize. `run`
/// refuses a slot that was dropped or lost WAL (`init` rebuilds instead).
pub(super) fn slot_verdict(
    start: Start,
    targets: Option<Lsn>,
    slot: Option<&SlotInfo>,
    slot_name: &str,
) -> Result<Option<Lsn>, SetupError> {
    let t = match (start, targets) {
        (Start::Resync, _) | (_, None) => return Ok(None),
        (_, Some(t)) => t,
    };
    if start == Start::Run {
        match slot {
            None => return Err(SetupError::SlotGone { slot: slot_name.to_string(), why: "was dropped".into(), target_lsn: t }),
            Some(s) if s.lost => return Err(SetupError::SlotGone { slot: slot_name.to_string(), why: "lost WAL it still needed (wal_status = 'lost': the server removed it, see max_slot_wal_keep_size)".into(), target_lsn: t }),
            Some(_) => {}
        }
    }
    Ok(Some(t))
}

/// The LSN to resume at when the state can continue the targets at `targets` from a slot
/// confirmed at `slot`; else why not.
pub(super) fn state_verdict(
    state: &StateFacts,
    targets: Lsn,
    slot: Option<Lsn>,
) -> Result<Lsn, String> {
    if state.partial {
        return Err(
            "it holds part of a large transaction or of a date change that was cut short"
                .to_string(),
        );
    }
    state_trust(state.lsn, state.acked, targets, slot).map(|()| state.lsn)
}

/// Why a state with LSN `state`, last acknowledged position `acked`, cannot continue targets at
/// `targets` from a slot confirmed at `slot`; `Ok` when it can.
fn state_trust(state: Lsn, acked: Lsn, targets: Lsn, slot: Option<Lsn>) -> Result<(), String> {
    if state > targets {
        return Err(format!(
            "the state (at {}) is ahead of the targets (at {}): the targets were restored from an older backup or rewritten behind the engine",
            state,
            targets
        ));
    }
    match slot {
        Some(a) if a > state.max(acked) => Err(format!(
            "the slot was confirmed up to {} but the state is at {}: the state directory is older than the slot (restored from a backup, or another engine's)",
            a,
            state
        )),
        _ => Ok(()),
    }
}

/// Opens the state directory; one RocksDB finds corrupt is moved aside (kept for a bug report)
/// and replaced by an empty one, which `init` then fills from a fresh snapshot.
pub(super) fn open_state(dir: &Path) -> Result<Store, SetupError> {
    match Store::open(dir) {
        Err(StoreError::Damaged { detail, .. }) => {
            let aside = dir.with_extension(format!("corrupt-{}", chrono::Utc::now().timestamp()));
            std::fs::rename(dir, &aside).map_err(|e| StoreError::Open {
                dir: dir.display().to_string(),
                detail: format!(
                    "it is corrupt ({detail}) and cannot be moved aside to {}: {e}",
                    aside.display()
                ),
            })?;
            tracing::error!(corrupt = %detail, moved_to = %aside.display(), "the state directory is corrupt: moved it aside; rebuilding from a fresh snapshot");
            Ok(Store::open(dir)?)
        }
        other => Ok(other?),
    }
}

/// The slot, once no other engine streams from it: this process's own walsender left over
/// from a cut connection is ended; another holder is waited for briefly, then refused by name.
pub(super) async fn free_slot(
    client: &Client,
    slot: &str,
) -> Result<Option<control::SlotInfo>, SetupError> {
    let ours = crate::source::stream::application_name(slot);
    let started = std::time::Instant::now();
    loop {
        let info = control::slot_info(client, slot).await?;
        match info.as_ref().and_then(|i| i.holder.as_ref()) {
            None => return Ok(info),
            Some(h) if h.application == ours => control::terminate_backend(client, h.pid).await?,
            Some(h) if started.elapsed() >= SLOT_HOLD_WAIT => {
                return Err(SetupError::SlotInUse {
                    slot: slot.to_string(),
                    holder: h.description.clone(),
                })
            }
            Some(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What the state directory says about a previous `init`: the LSN it was loaded or maintained
/// up to, when its snapshot completed and it was built for these tables and views (`fingerprint`).
pub fn initialized_lsn(store: &Store, fingerprint: &str) -> Result<Option<Lsn>, StoreError> {
    let done = meta::read_snapshot_done(store)?;
    let fp = meta::read_fingerprint(store)?;
    if !done || fp.as_deref() != Some(fingerprint) {
        return Ok(None);
    }
    meta::read_lsn(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::Durability;

    const SLOT: &str = "deltamv";
    const FP: &str = "tz=UTC\n";

    fn slot(confirmed: u64) -> SlotInfo {
        SlotInfo {
            confirmed_lsn: Some(Lsn(confirmed)),
            lost: false,
            holder: None,
        }
    }

    fn lost(confirmed: u64) -> SlotInfo {
        SlotInfo {
            lost: true,
            ..slot(confirmed)
        }
    }

    fn facts(lsn: u64, acked: u64, partial: bool) -> StateFacts {
        StateFacts {
            lsn: Lsn(lsn),
            acked: Lsn(acked),
            partial,
        }
    }

    /// A state store in a temporary directory holding these meta values.
    fn store(meta: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        store
            .commit(meta, Durability::Synced)
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, store)
    }

    /// A state whose snapshot completed at `lsn` for fingerprint [`FP`].
    fn initialized(lsn: u64, extra: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, Store) {
        let mut meta = vec![
            meta::snapshot_done(true),
            meta::fingerprint(FP),
            meta::lsn(Lsn(lsn)),
        ];
        meta.extend(extra.iter().cloned());
        store(&meta)
    }

    #[test]
    fn resync_and_never_loaded_targets_initialize() {
        for start in [Start::Run, Start::Init, Start::Resync] {
            let verdict = slot_verdict(start, None, None, SLOT).expect("no error");
            assert_eq!(verdict, None, "{start:?} without targets");
        }
        let verdict = slot_verdict(Start::Resync, Some(Lsn(5)), Some(&slot(5)), SLOT);
        assert_eq!(verdict.expect("no error"), None);
    }

    #[test]
    fn run_refuses_a_dropped_or_lost_slot_naming_the_fix() {
        let err = slot_verdict(Start::Run, Some(Lsn(0x1_0000_0010)), None, SLOT)
            .expect_err("dropped slot");
        assert_eq!(
            err.to_string(),
            "replication slot deltamv was dropped, so the changes after the targets' position 1/10 can no longer be streamed: run `deltamv init --resync` to rebuild from a fresh snapshot (the targets stay readable until it swaps them in)"
        );
        let err =
            slot_verdict(Start::Run, Some(Lsn(16)), Some(&lost(8)), SLOT).expect_err("lost slot");
        assert!(
            err.to_string().starts_with(
                "replication slot deltamv lost WAL it still needed (wal_status = 'lost'"
            ),
            "{err}"
        );
    }

    #[test]
    fn init_consults_the_state_whatever_the_slot() {
        for s in [None, Some(slot(8)), Some(lost(8))] {
            let verdict = slot_verdict(Start::Init, Some(Lsn(16)), s.as_ref(), SLOT);
            assert_eq!(verdict.expect("no error"), Some(Lsn(16)));
        }
        let verdict = slot_verdict(Start::Run, Some(Lsn(16)), Some(&slot(8)), SLOT);
        assert_eq!(verdict.expect("no error"), Some(Lsn(16)));
    }

    #[test]
    fn a_state_between_slot_and_targets_is_trusted() {
        // A <= S <= T, at the bounds too.
        for (a, s, t) in [(4, 8, 16), (8, 8, 8), (0, 16, 16)] {
            assert_eq!(
                state_verdict(&facts(s, 0, false), Lsn(t), Some(Lsn(a))),
                Ok(Lsn(s)),
                "A={a} S={s} T={t}"
            );
        }
        // A slot without a confirmed position constrains nothing.
        assert_eq!(
            state_verdict(&facts(8, 0, false), Lsn(16), None),
            Ok(Lsn(8))
        );
        // The slot may be ahead of the state up to what the engine acknowledged.
        assert_eq!(
            state_verdict(&facts(8, 12, false), Lsn(16), Some(Lsn(12))),
            Ok(Lsn(8))
        );
    }

    #[test]
    fn a_state_ahead_of_the_targets_is_distrusted() {
        let why = state_verdict(&facts(0x20, 0, false), Lsn(0x10), Some(Lsn(0x8)))
            .expect_err("state ahead");
        assert_eq!(
            why,
            "the state (at 0/20) is ahead of the targets (at 0/10): the targets were restored from an older backup or rewritten behind the engine"
        );
    }

    #[test]
    fn a_state_older_than_the_slot_is_distrusted() {
        let why = state_verdict(&facts(0x8, 0x9, false), Lsn(0x10), Some(Lsn(0xA)))
            .expect_err("slot ahead");
        assert_eq!(
            why,
            "the slot was confirmed up to 0/A but the state is at 0/8: the state directory is older than the slot (restored from a backup, or another engine's)"
        );
    }

    #[test]
    fn a_state_cut_in_a_large_transaction_is_distrusted() {
        let why = state_verdict(&facts(8, 0, true), Lsn(16), Some(Lsn(8))).expect_err("partial");
        assert_eq!(
            why,
            "it holds part of a large transaction or of a date change that was cut short"
        );
    }

    #[test]
    fn initialized_lsn_needs_a_complete_snapshot_of_the_same_fingerprint() {
        let (_dir, s) = initialized(8, &[]);
        assert_eq!(initialized_lsn(&s, FP).expect("reads"), Some(Lsn(8)));
        assert_eq!(
            initialized_lsn(&s, "tz=Europe/Paris\n").expect("reads"),
            None
        );
        let (_dir, s) = initialized(8, &[meta::snapshot_done(false)]);
        assert_eq!(initialized_lsn(&s, FP).expect("reads"), None);
        let (_dir, s) = store(&[]);
        assert_eq!(initialized_lsn(&s, FP).expect("reads"), None);
    }

    #[test]
    fn resume_point_resumes_only_a_trusted_initialized_state_with_a_live_slot() {
        let resume = |start, targets: Option<u64>, slot: Option<&SlotInfo>, s: &Store| {
            resume_point(start, targets.map(Lsn), slot, s, FP, SLOT)
        };
        let (_dir, good) = initialized(8, &[meta::acked(Lsn(8))]);
        assert_eq!(
            resume(Start::Init, Some(16), Some(&slot(8)), &good).expect("decides"),
            Some(Lsn(8))
        );
        assert_eq!(
            resume(Start::Run, Some(16), Some(&slot(8)), &good).expect("decides"),
            Some(Lsn(8))
        );
        // Rebuilt: asked to, never loaded, no or lost slot on init, state not initialized for
        // these views, state not trusted.
        assert_eq!(
            resume(Start::Resync, Some(16), Some(&slot(8)), &good).expect("decides"),
            None
        );
        assert_eq!(
            resume(Start::Init, None, Some(&slot(8)), &good).expect("decides"),
            None
        );
        assert_eq!(
            resume(Start::Init, Some(16), None, &good).expect("decides"),
            None
        );
        assert_eq!(
            resume(Start::Init, Some(16), Some(&lost(8)), &good).expect("decides"),
            None
        );
        let (_dir, fresh) = store(&[]);
        assert_eq!(
            resume(Start::Init, Some(16), Some(&slot(8)), &fresh).expect("decides"),
            None
        );
        assert_eq!(
            resume(Start::Init, Some(4), Some(&slot(2)), &good).expect("decides"),
            None,
            "state ahead of the targets"
        );
        let (_dir, partial) = initialized(8, &[meta::partial(true)]);
        assert_eq!(
            resume(Start::Init, Some(16), Some(&slot(8)), &partial).expect("decides"),
            None
        );
        // Refused on run.
        assert!(matches!(
            resume(Start::Run, Some(16), None, &good),
            Err(SetupError::SlotGone { .. })
        ));
        assert!(matches!(
            resume(Start::Run, Some(16), Some(&lost(8)), &good),
            Err(SetupError::SlotGone { .. })
        ));
    }

    #[test]
    fn resume_point_reads_acked_and_partial_only_when_it_needs_them() {
        // Undecodable values the decision does not need cannot fail it.
        let garbage = vec![0xFF];
        let (_dir, s) = initialized(
            8,
            &[("acked", garbage.clone()), ("partial", garbage.clone())],
        );
        assert_eq!(
            resume_point(Start::Init, Some(Lsn(16)), Some(&lost(8)), &s, FP, SLOT)
                .expect("not read"),
            None
        );
        assert!(matches!(
            resume_point(Start::Init, Some(Lsn(16)), Some(&slot(8)), &s, FP, SLOT),
            Err(SetupError::Store(_))
        ));
    }
}
